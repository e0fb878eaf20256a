"""The job spec parser: defaults, and errors that name the field at fault."""

from pathlib import Path

import pytest
import yaml
from support.trainer_jobs import ROOT, job_doc

from prefops_trainer.adapters.jobfile import load_job
from prefops_trainer.core.algorithms import ALGORITHM_NAMES
from prefops_trainer.core.errors import SpecError
from prefops_trainer.core.spec import parse_job
from prefops_trainer.core.uris import Uri


def parse(tmp_path: Path, **spec):
    return parse_job(job_doc(tmp_path, **spec))


def test_every_example_job_manifest_parses():
    examples = sorted(p for p in (ROOT / "examples").glob("*.yaml") if "kind: PreferenceTrainingJob" in p.read_text())
    assert examples, "examples/ holds job manifests"
    for path in examples:
        assert load_job(path).kind == "PreferenceTrainingJob"


def test_defaults_fill_every_optional_field(tmp_path):
    job = parse_job(
        {
            "apiVersion": "prefops.dev/v1alpha1",
            "kind": "PreferenceTrainingJob",
            "metadata": {"name": "j"},
            "spec": {
                "model": {"source": "m"},
                "dataset": {"source": "d"},
                "algorithm": {"name": "dpo"},
                "output": {"uri": "s3://b/o"},
                "storage": {"uri": "s3://b/w"},
            },
        }
    )
    s = job.spec
    assert (s.algorithm.losses, s.algorithm.beta, s.precompute) == (
        ("sigmoid",),
        0.1,
        True,
    )
    assert s.model.lora is None and s.training.deepspeed is None
    assert (s.dataset.max_length, s.backoff_limit, s.resources.nproc_per_node) == (
        1024,
        3,
        1,
    )
    assert job.namespace == "default"


def test_reference_free_algorithms_skip_precompute_by_default(tmp_path):
    for name in ("cpo", "simpo", "cpo-simpo", "alphapo", "orpo"):
        assert parse(tmp_path, algorithm={"name": name}).spec.precompute is False


def test_spec_objects_are_frozen(tmp_path):
    job = parse(tmp_path)
    with pytest.raises(Exception, match="frozen"):
        job.spec.algorithm.beta = 2.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"algorithm": {"name": "ppo"}},
            r"spec\.algorithm\.name: unknown algorithm 'ppo'; valid: dpo, cpo, simpo",
        ),
        (
            {"algorithm": {"name": "dpo", "lossType": ["nope"]}},
            r"spec\.algorithm\.lossType: 'nope' not valid .*valid: sigmoid, hinge",
        ),
        (
            {"algorithm": {"name": "cpo", "lossType": ["nca_pair"]}},
            r"lossType: 'nca_pair' not valid for algorithm 'cpo'; valid: sigmoid, hinge, ipo",
        ),
        (
            {"algorithm": {"name": "dpo", "beta": 0}},
            r"spec\.algorithm\.beta: must be > 0, got 0",
        ),
        (
            {"algorithm": {"name": "dpo", "beta": -1.5}},
            r"spec\.algorithm\.beta: must be > 0, got -1\.5",
        ),
        (
            {
                "algorithm": {
                    "name": "dpo",
                    "lossType": ["sigmoid", "sft"],
                    "lossWeights": [1.0],
                }
            },
            r"spec\.algorithm\.lossWeights: has 1 weights for 2 loss types \(sigmoid, sft\)",
        ),
        (
            {"algorithm": {"name": "orpo"}, "reference": {"precompute": True}},
            r"spec\.reference\.precompute: algorithm 'orpo' is reference-free",
        ),
        (
            {"training": {"deepspeed": {"stage": 4}}},
            r"spec\.training\.deepspeed\.stage: must be 2 or 3, got 4",
        ),
        (
            {"training": {"learningRat": 0.1}},
            r"spec\.training\.learningRat: unknown field",
        ),
        (
            {"dataset": {"maxLength": 2}},
            r"spec\.dataset\.maxLength: input should be greater than or equal to 8, got 2",
        ),
        ({"output": None}, r"spec\.output: required field is missing"),
        (
            {"algorithm": {"name": "dpo", "lossType": ["exo_pair"]}},
            r"spec\.algorithm\.labelSmoothing: must be > 0 for lossType exo_pair",
        ),
        (
            {"model": {"dtype": "int8"}},
            r"spec\.model\.dtype: input should be 'auto', 'float32', 'bfloat16' or 'float16', got 'int8'",
        ),
        ({"resources": {"nodes": 513}}, r"spec\.resources\.nodes: input should be less than or equal to 512"),
        ({"resources": {"gpusPerNode": 17}}, r"spec\.resources\.gpusPerNode: input should be less than or equal to 16"),
        ({"reference": {"workers": 257}}, r"spec\.reference\.workers: input should be less than or equal to 256"),
        (
            {"dataset": {"maxLength": 131073}},
            r"spec\.dataset\.maxLength: input should be less than or equal to 131072, got 131073",
        ),
        ({"rewardModel": {"trustRemotCode": True}}, r"spec\.rewardModel\.trustRemotCode: unknown field"),
    ],
)
def test_bad_spec_is_rejected_naming_the_field(tmp_path, spec, message):
    with pytest.raises(SpecError, match=message):
        parse(tmp_path, **spec)


def test_all_problems_are_reported_together(tmp_path):
    with pytest.raises(SpecError) as err:
        parse(
            tmp_path,
            algorithm={"name": "dpo", "beta": 0, "lossWeights": [1, 2]},
            training={"deepspeed": {"stage": 1}},
        )
    assert str(err.value).count("spec.") == 3


def test_unknown_algorithm_message_lists_every_valid_algorithm(tmp_path):
    with pytest.raises(SpecError) as err:
        parse(tmp_path, algorithm={"name": "rlhf"})
    for name in ALGORITHM_NAMES:
        assert name in str(err.value)


def test_job_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match=r"nope\.yaml: job file does not exist"):
        load_job(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [unclosed\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: not valid YAML"):
        load_job(bad)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"kind": "Pod"}))
    with pytest.raises(
        SpecError,
        match=r"other\.yaml: expected exactly one PreferenceTrainingJob document, found 0",
    ):
        load_job(other)


def test_uris_are_parsed_once_into_typed_values_and_written_back_as_given(tmp_path):
    job = parse(
        tmp_path,
        model={"source": "hf://org/name@v1"},
        dataset={"source": "data/prefs.jsonl"},
        storage={"uri": "s3://bucket/work/"},
    )
    s = job.spec
    assert (s.model.source.scheme, s.model.source.path) == ("hf", "org/name@v1")
    assert (s.storage.uri.scheme, s.storage.uri.path) == ("s3", "bucket/work")
    assert s.dataset.source == Uri("file", str(Path("data/prefs.jsonl").resolve()))
    written = job.model_dump(mode="json", by_alias=True)["spec"]
    assert (written["dataset"]["source"], written["storage"]["uri"]) == ("data/prefs.jsonl", "s3://bucket/work/")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"output": {"uri": "hf://org/name"}}, r"spec\.output\.uri: hf:// is only valid for model and dataset sources"),
        ({"storage": {"uri": "s3://"}}, r"spec\.storage\.uri: s3 URI needs a bucket, got 's3://'"),
        ({"model": {"source": "hf://justname"}}, r"spec\.model\.source: hf URI must look like hf://org/name"),
        ({"dataset": {"source": "gs://b/p"}}, r"spec\.dataset\.source: unsupported URI scheme 'gs'"),
        ({"model": {"source": 5}}, r"spec\.model\.source: must be a string, got 5"),
        (
            {"storage": {"uri": "s3://bucket/team-a/../team-b"}},
            r"spec\.storage\.uri: s3 URI must not hold '\.', '\.\.' or empty segments",
        ),
        ({"model": {"source": "s3://bucket//models"}}, r"spec\.model\.source: s3 URI must not hold"),
    ],
)
def test_bad_uris_are_rejected_at_parse_time_naming_the_field(tmp_path, spec, message):
    with pytest.raises(SpecError, match=message):
        parse(tmp_path, **spec)


@pytest.mark.parametrize(
    ("block", "value"),
    [
        ("storage", "s3://AKIAEXAMPLEKEY:wJalrXUtnFEMIEXAMPLESECRET@bucket/work"),
        ("output", "s3://AKIAEXAMPLEKEY:wJalrXUtnFEMIEXAMPLESECRET@bucket/models"),
        ("dataset", "s3://AKIAEXAMPLEKEY:wJalrXUtnFEMIEXAMPLESECRET@bucket/prefs.jsonl"),
        ("model", "hf://someone:hf_EXAMPLETOKEN@org/name"),
        ("model", "file://someone:EXAMPLEPASSWORD@host/models/m"),
    ],
    ids=["storage", "output", "dataset", "hub-token", "file"],
)
def test_credentials_in_a_uri_are_refused_naming_the_field_without_repeating_them(tmp_path, block, value):
    key = "uri" if block in ("storage", "output") else "source"
    with pytest.raises(SpecError) as err:
        parse(tmp_path, **{block: {key: value}})
    message = str(err.value)
    assert f"spec.{block}.{key}: credentials must not be written into a URI" in message
    user, password = value.split("://")[1].split("@")[0].split(":")
    assert user not in message and password not in message


@pytest.mark.parametrize(
    "value",
    [
        "s3:///AKIAEXAMPLEKEY:wJalrXUtnFEMIEXAMPLESECRET@bucket/work",
        "s3:/AKIAEXAMPLEKEY:wJalrXUtnFEMIEXAMPLESECRET@bucket/work",
        "s3://AKIAEXAMPLEKEY:wJalrXUt/nFEMIEXAMPLESECRET@bucket/work",
    ],
    ids=["three-slashes", "one-slash", "slash-in-secret"],
)
def test_a_mistyped_uri_with_credentials_is_refused_as_one_without_repeating_them(tmp_path, value):
    with pytest.raises(SpecError) as err:
        parse(tmp_path, storage={"uri": value})
    message = str(err.value)
    assert "spec.storage.uri: credentials must not be written into a URI" in message
    assert "AKIAEXAMPLEKEY" not in message and "EXAMPLESECRET" not in message


def test_a_gate_parses_with_its_bound_and_needs_an_eval_split_and_an_evaluation_metric(tmp_path):
    split = {"source": "d/", "evalSplit": "test"}
    job = parse(tmp_path, dataset=split, output={"uri": "o", "gate": {"metric": "rewards/accuracies", "min": 0.6}})
    assert job.spec.output.gate.bound == ("min", 0.6) and job.spec.evaluates
    assert parse(
        tmp_path, dataset=split, output={"uri": "o", "gate": {"metric": "loss", "max": 0}}
    ).spec.output.gate.bound == (
        "max",
        0.0,
    )
    with pytest.raises(SpecError, match=r"spec\.output\.gate: needs spec\.dataset\.evalSplit"):
        parse(tmp_path, output={"uri": "o", "gate": {"metric": "loss", "max": 0.5}})
    with pytest.raises(
        SpecError, match=r"spec\.output\.gate\.metric: 'kl' is not an evaluation metric of algorithm 'dpo'"
    ):
        parse(tmp_path, dataset=split, output={"uri": "o", "gate": {"metric": "kl", "max": 0.5}})
    with pytest.raises(SpecError, match=r"output\.gate\.metric: input should be 'loss', 'rewards/accuracies'"):
        parse(tmp_path, dataset=split, output={"uri": "o", "gate": {"metric": "accuracy", "min": 0.5}})


def test_online_dpo_with_an_eval_split_is_not_evaluated_and_cannot_be_gated(tmp_path):
    online = {
        "algorithm": {"name": "online-dpo"},
        "rewardModel": {"source": "r"},
        "dataset": {"source": "d/", "evalSplit": "test"},
    }
    assert parse(tmp_path, **online).spec.evaluates is False
    with pytest.raises(
        SpecError, match=r"algorithm 'online-dpo' reports no evaluation metrics, so there is nothing to gate on"
    ):
        parse(tmp_path, **online, output={"uri": "o", "gate": {"metric": "loss", "max": 1}})


def test_the_gate_metric_type_lists_every_evaluation_metric_in_the_tables_order():
    import typing

    from prefops_trainer.core.algorithms import ALL_EVAL_METRICS, EvalMetric

    assert typing.get_args(EvalMetric) == ALL_EVAL_METRICS
