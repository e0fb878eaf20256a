"""The sweep CRD and the job CRD's gate, as files and as a real apiserver serves them: the sweep's template is the
job schema (generated, never edited by hand), every property is documented, and what the schemas can reject they
reject with 422 naming the field."""

from __future__ import annotations

import json
import subprocess
import sys

import kubernetes
import pytest
import yaml
from support.jobs import job_manifest
from support.kube import ROOT
from support.sweeps import sweep_manifest

JOB_CRD = yaml.safe_load((ROOT / "crds" / "prefops.dev_preferencetrainingjobs.yaml").read_text())
SWEEP_CRD = yaml.safe_load((ROOT / "crds" / "prefops.dev_preferencetrainingsweeps.yaml").read_text())


def schema(crd):
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(node, path=""):
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from walk(node[key], f"{path}[]")


def test_the_sweep_template_is_the_job_spec_schema_generated_from_the_job_crd():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_sweep_crd.py"), "--check"],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    template = dict(schema(SWEEP_CRD)["properties"]["spec"]["properties"]["template"])
    job_spec = dict(schema(JOB_CRD)["properties"]["spec"])
    assert template.pop("description") != job_spec.pop("description")
    assert template == job_spec


def test_every_property_of_the_sweep_crd_has_a_description():
    undocumented = [p for p, s in walk(schema(SWEEP_CRD)) if p not in ("", ".metadata") and not s.get("description")]
    assert undocumented == []


@pytest.fixture
def sweeps_api(kube_cluster, namespace):
    def create(manifest):
        return kube_cluster.custom().create_namespaced_custom_object(
            "prefops.dev", "v1alpha1", namespace, "preferencetrainingsweeps", manifest
        )

    return create


def rejection(create, manifest) -> str:
    with pytest.raises(kubernetes.client.ApiException) as caught:
        create(manifest)
    assert caught.value.status == 422
    return str(json.loads(caught.value.body)["message"])


BAD_SWEEPS = [
    ({"objective": None}, "spec.objective: Required value"),
    ({"objective": {"metric": "accuracy", "goal": "maximize"}}, 'spec.objective.metric: Unsupported value: "accuracy"'),
    ({"objective": {"metric": "loss", "goal": "lower"}}, 'spec.objective.goal: Unsupported value: "lower"'),
    ({"parallelism": 0}, "spec.parallelism: Invalid value: 0"),
    ({"parameters": []}, "spec.parameters: Invalid value: 0"),
    ({"parameters": [{"path": "algorithm beta", "values": [1]}]}, "spec.parameters.path: Invalid value"),
    ({"parameters": [{"path": "algorithm.beta", "values": []}]}, "spec.parameters.values: Invalid value: 0"),
    ({"trials": [{"algorithm.beta": 0.1}]}, '"spec" must validate one and only one schema (oneOf). Found 2'),
    ({"parameters": None}, '"spec" must validate one and only one schema (oneOf). Found none valid'),
    ({"template": {**sweep_manifest("x")["spec"]["template"], "algorithm": {"name": "ppo"}}},
     'spec.template.algorithm.name: Unsupported value: "ppo"'),
]  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize(
    ("spec", "message"), BAD_SWEEPS, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD_SWEEPS)]
)
def test_the_apiserver_rejects_sweeps_that_break_the_schema_naming_the_field(sweeps_api, spec, message):
    manifest = sweep_manifest("bad")
    for key, value in spec.items():
        if value is None:
            del manifest["spec"][key]
        else:
            manifest["spec"][key] = value
    assert message in rejection(sweeps_api, manifest)


@pytest.mark.integration
def test_a_sweep_keeps_its_parameter_values_as_written_and_defaults_its_template(sweeps_api):
    values = [["sigmoid"], ["ipo", "sft"]]
    manifest = sweep_manifest("kept", {"parameters": [{"path": "algorithm.lossType", "values": values}],
                                       "trials": None})  # fmt: skip
    del manifest["spec"]["trials"]
    served = sweeps_api(manifest)["spec"]
    assert served["parameters"][0]["values"] == values
    assert served["parallelism"] == 2 and served["suspend"] is False
    assert served["template"]["training"]["epochs"] == 1 and served["template"]["resources"]["nodes"] == 1
    manifest = sweep_manifest("listed", {"trials": [{"model.lora": {"r": 8}}]})
    del manifest["spec"]["parameters"]
    assert sweeps_api(manifest)["spec"]["trials"] == [{"model.lora": {"r": 8}}]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("gate", "message"),
    [
        ({"metric": "loss"}, '"spec.output.gate" must validate one and only one schema (oneOf). Found none valid'),
        (
            {"metric": "loss", "min": 0.1, "max": 0.5},
            '"spec.output.gate" must validate one and only one schema (oneOf). Found 2',
        ),
        ({"metric": "accuracy", "min": 0.5}, 'spec.output.gate.metric: Unsupported value: "accuracy"'),
        ({"min": 0.5}, "spec.output.gate.metric: Required value"),
    ],
    ids=["no-bound", "both-bounds", "unknown-metric", "no-metric"],
)
def test_the_apiserver_rejects_a_gate_without_exactly_one_bound_or_with_an_unknown_metric(jobs, gate, message):
    with pytest.raises(kubernetes.client.ApiException) as caught:
        jobs.create(job_manifest("gated", {"dataset": {"evalSplit": "test"}, "output": {"gate": gate}}))
    assert caught.value.status == 422
    assert message in json.loads(caught.value.body)["message"]


@pytest.mark.integration
def test_a_gate_with_one_bound_is_accepted(jobs):
    spec = jobs.create(job_manifest("gated", {"output": {"gate": {"metric": "rewards/accuracies", "min": 0.6}}}))[
        "spec"
    ]
    assert spec["output"]["gate"] == {"metric": "rewards/accuracies", "min": 0.6}
