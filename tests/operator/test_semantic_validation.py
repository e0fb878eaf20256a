"""The checks the CRD schema cannot express: each names its field. Pure, no server."""

from __future__ import annotations

import pytest
from support.operator_core import make_job

from prefops_operator.core.validation import semantic_problems

CASES = [
    (
        {"algorithm": {"name": "cpo", "lossType": ["sigmoid", "hinge"]}},
        "spec.algorithm.lossType: algorithm 'cpo' takes a single loss type, got 2",
    ),
    (
        {"algorithm": {"name": "orpo", "lossType": ["simpo"]}},
        "spec.algorithm.lossType: 'simpo' not valid for algorithm 'orpo'; valid: orpo",
    ),
    (
        {"algorithm": {"name": "dpo", "lossType": ["sigmoid", "sft"], "lossWeights": [1.0]}},
        "spec.algorithm.lossWeights: has 1 weights for 2 loss types (sigmoid, sft)",
    ),
    (
        {"algorithm": {"name": "dpo", "lossType": ["exo_pair"]}},
        "spec.algorithm.labelSmoothing: must be > 0 for lossType exo_pair",
    ),
    ({"algorithm": {"name": "dpo", "beta": 0}}, "spec.algorithm.beta: must be > 0, got 0.0"),
    (
        {"algorithm": {"name": "simpo"}, "reference": {"precompute": True}},
        "spec.reference.precompute: algorithm 'simpo' is reference-free",
    ),
    ({"output": {"uri": "/models/out"}}, "spec.output.uri: must be an s3://bucket/prefix URI on a cluster"),
    ({"storage": {"uri": "file:///work"}}, "spec.storage.uri: must be an s3://bucket/prefix URI on a cluster"),
    ({"storage": {"uri": "s3:///no-bucket"}}, "spec.storage.uri: s3 URI needs a bucket"),
    ({"model": {"source": "gs://bucket/model"}}, "spec.model.source: unsupported URI scheme 'gs'"),
    ({"dataset": {"source": "hf://just-a-name"}}, "spec.dataset.source: hf URI must look like hf://org/name"),
    (
        {"resources": {"limits": {"nvidia.com/gpu": 8}}},
        "spec.resources.limits.nvidia.com/gpu: set GPUs with spec.resources.gpusPerNode",
    ),
    ({"resources": {"requests": {"memory": "lots"}}}, "spec.resources.requests.memory: 'lots' is not a Kubernetes"),
    ({"resources": {"gpusPerNode": 2, "processesPerNode": 4}}, "spec.resources.processesPerNode: 4 processes for 2"),
    ({"storage": {"uri": "s3://w/x", "credentialsSecret": "Bad_Name"}}, "spec.storage.credentialsSecret: 'Bad_Name'"),
    ({"algorithm": {"name": "online-dpo"}}, "spec.rewardModel: algorithm 'online-dpo' needs a reward model"),
    ({"algorithm": {"name": "dpo"}, "generation": {"maxNewTokens": 8}}, "spec.generation: only algorithm 'online-dpo'"),
    (
        {"algorithm": {"name": "kto"}, "dataset": {"source": "s3://d/p", "truncationMode": "keep_end"}},
        "spec.dataset.truncationMode: algorithm 'kto' supports only keep_start",
    ),
    (
        {
            "algorithm": {"name": "online-dpo"},
            "rewardModel": {"source": "hf://o/rm"},
            "training": {"deepspeed": {"stage": 3}},
        },
        "spec.training.deepspeed.stage: 3 is not supported with spec.algorithm.name 'online-dpo' and full fine-tuning "
        "(no spec.model.lora)",
    ),
    ({"training": {"epochz": 3}}, "spec.training.epochz: unknown field; did you mean 'epochs'?"),
    ({"lora": {"r": 8}}, "spec.lora: unknown field; lora belongs at spec.model.lora"),
    ({"training": {"deepspeed": {"stage": 3, "offlaod": "cpu"}}}, "spec.training.deepspeed.offlaod: unknown field"),
    (
        {"resources": {"tolerations": [{"key": "gpu", "operator": "Exists", "efect": "NoSchedule"}]}},
        "spec.resources.tolerations[0].efect: unknown field; did you mean 'effect'?",
    ),
]


@pytest.mark.parametrize(("spec", "message"), CASES, ids=[c[1].split(":")[0] + f"-{i}" for i, c in enumerate(CASES)])
def test_each_problem_the_schema_lets_through_is_reported_with_its_field(spec, message):
    problems = semantic_problems(make_job(spec=spec).spec)
    assert len(problems) == 1
    assert problems[0].startswith(message)


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"algorithm": {"name": "dpo", "lossType": ["sigmoid", "sft"], "lossWeights": [1.0, 0.5]}},
        {"algorithm": {"name": "dpo", "lossType": ["exo_pair"], "labelSmoothing": 0.001}},
        {"algorithm": {"name": "alphapo"}, "reference": {"precompute": False}},
        {"algorithm": {"name": "kto", "lossType": ["apo_zero_unpaired"]}},
        {"algorithm": {"name": "online-dpo"}, "rewardModel": {"source": "hf://org/rm"}, "generation": {"topP": 0.9}},
        {
            "algorithm": {"name": "online-dpo"},
            "rewardModel": {"source": "hf://org/rm"},
            "model": {"lora": {"r": 8}},
            "training": {"deepspeed": {"stage": 3}},
        },
        {"model": {"source": "s3://models/base"}, "dataset": {"source": "/data/prefs.jsonl"}},
        {"resources": {"requests": {"cpu": "500m", "memory": "64Gi", "ephemeral-storage": 100}}},
    ],
)
def test_valid_cluster_specs_have_no_problems(spec):
    assert semantic_problems(make_job(spec=spec).spec) == []


def test_a_free_form_map_may_hold_any_key():
    spec = {"resources": {"requests": {"example.com/fpga": 1}, "nodeSelector": {"any/label": "x"}}}
    assert semantic_problems(make_job(spec=spec).spec) == []


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"storage": {"uri": "s3://AKIAEXAMPLE:wJalrXUtnFEMI@work/prefops"}}, "spec.storage.uri"),
        ({"output": {"uri": "s3://AKIAEXAMPLE@models/out"}}, "spec.output.uri"),
        ({"model": {"source": "hf://someone:hf_SeCrEtToKeN@org/model"}}, "spec.model.source"),
        ({"dataset": {"source": "s3://k:s@prefs/p.jsonl"}}, "spec.dataset.source"),
        (
            {"algorithm": {"name": "online-dpo"}, "rewardModel": {"source": "hf://u:t0ken@org/rm"}},
            "spec.rewardModel.source",
        ),
    ],
)
def test_a_uri_carrying_credentials_is_refused_naming_the_field_without_repeating_the_secret(spec, field):
    problems = semantic_problems(make_job(spec=spec).spec)
    assert [p.split(":")[0] for p in problems] == [field]
    assert "must not carry credentials" in problems[0]
    secret = next(v for v in ("wJalrXUtnFEMI", "AKIAEXAMPLE", "hf_SeCrEtToKeN", "k:s", "t0ken") if v in str(spec))
    assert secret not in problems[0]


@pytest.mark.parametrize("uri", ["s3://bucket/key@v2", "hf://org/name", "/data/a@b.jsonl", "s3://b/p?x=y@z"])
def test_an_at_sign_after_the_host_is_no_credential(uri):
    assert semantic_problems(make_job(spec={"dataset": {"source": uri}}).spec) == []
