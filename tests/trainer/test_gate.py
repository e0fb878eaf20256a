"""The quality gate (docs/contract.md §8): a model whose final evaluation misses spec.output.gate is not published:
exit 3, one paragraph (printed by `run`), the verdict as the export's termination message, nothing in output.uri,
the trained weights kept in the work storage; relaxing the gate publishes those same weights."""

import json
from pathlib import Path

import pytest
from support.trainer_jobs import TINY, run_cli, write_job

from prefops_trainer.core.evaluation import Evaluation, judge
from prefops_trainer.core.spec import GateSpec

#: the tiny job, evaluated on the held-out split, gated on an eval loss no DPO model reaches (the loss is positive)
GATED = {
    "dataset": {"source": str(TINY / "prefs-split"), "evalSplit": "test"},
    "training": {"maxSteps": 4, "checkpointEverySteps": 2},
}
UNMET = {"metric": "loss", "max": 0.0}


@pytest.fixture(scope="module")
def missed(tmp_path_factory):
    """``prefops-trainer run`` of a job whose gate cannot be met: (tmp dir, the job's spec overrides, its result)."""
    tmp = tmp_path_factory.mktemp("gate")
    spec = {**GATED, "output": {"uri": str(tmp / "out"), "gate": UNMET}}
    return tmp, spec, run_cli("run", write_job(tmp, **spec))


def trained_dir(tmp: Path) -> Path:
    (marker,) = (tmp / "work").rglob("trained/prefops-trained.json")
    return marker.parent


def final_evaluation(tmp: Path) -> dict:
    return json.loads((trained_dir(tmp) / "prefops-trained.json").read_text())["evaluation"]


def test_a_run_that_misses_its_gate_exits_3_prints_why_and_publishes_nothing(missed):
    tmp, _, result = missed
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    final = final_evaluation(tmp)
    paragraph = (
        f"spec.output.gate is not met: eval loss at step {final['step']} is {final['metrics']['loss']:g}, above the "
        f"maximum 0 (output.gate.max); the model was not written to {tmp / 'out'}; the trained weights stay in "
        f"{trained_dir(tmp)}."
    )
    assert "prefops: the model was not published" in result.stdout and paragraph in result.stdout
    assert paragraph in [line for line in result.stderr.splitlines() if " ERROR " in line][-1]
    assert not (tmp / "out").exists() or not any((tmp / "out").iterdir()), "nothing written to output.uri"
    assert (trained_dir(tmp) / "adapter_model.safetensors").exists(), "the trained weights stay for inspection"


def test_the_export_phase_reports_the_verdict_as_its_termination_message(missed):
    from prefops_operator.core.evaluation import GATE_NOT_MET_EXIT_CODE, gate_message
    from prefops_operator.core.spec import Gate

    tmp, spec, _ = missed
    term = tmp / "termination-log"
    term.write_text("")
    result = run_cli("export", write_job(tmp, **spec), env={"PREFOPS_TERMINATION_LOG": str(term)})
    assert result.returncode == GATE_NOT_MET_EXIT_CODE == 3
    final = final_evaluation(tmp)
    message = term.read_text()
    assert "\n" not in message
    assert json.loads(message) == {
        "gate": {
            "metric": "loss",
            "value": final["metrics"]["loss"],
            "max": 0.0,
            "step": final["step"],
            "trained": str(trained_dir(tmp)),
        }
    }
    shown = gate_message(message, Gate("loss", None, 0.0), str(tmp / "out"))
    assert f"eval loss at step {final['step']} is {round(final['metrics']['loss'], 6):g}, above the maximum 0" in shown
    assert not (tmp / "out").exists() or not any((tmp / "out").iterdir())


def test_relaxing_the_gate_publishes_the_same_trained_weights_and_records_the_verdict(missed):
    tmp, spec, _ = missed
    met = {**spec, "output": {"uri": str(tmp / "published"), "gate": {"metric": "loss", "max": 5.0}}}
    before = (trained_dir(tmp) / "adapter_model.safetensors").read_bytes()
    result = run_cli("export", write_job(tmp, **met))
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp / "published" / "prefops.json").read_text())
    final = final_evaluation(tmp)
    assert manifest["gate"] == {"metric": "loss", "value": final["metrics"]["loss"], "max": 5.0, "passed": True}
    assert manifest["evaluation"] == final
    assert (trained_dir(tmp) / "adapter_model.safetensors").read_bytes() == before, "not trained again"
    card = (tmp / "published" / "README.md").read_text()
    assert f"Quality gate `loss ≤ 5`: passed ({final['metrics']['loss']:.4g})" in card


@pytest.mark.parametrize(
    ("gate", "evaluation", "passed", "value"),
    [
        ({"metric": "rewards/accuracies", "min": 0.6}, {"rewards/accuracies": 0.6}, True, 0.6),
        ({"metric": "rewards/accuracies", "min": 0.6}, {"rewards/accuracies": 0.59}, False, 0.59),
        ({"metric": "loss", "max": 0.5}, {"loss": 0.5}, True, 0.5),
        ({"metric": "loss", "max": 0.5}, {"loss": 0.51}, False, 0.51),
        ({"metric": "rewards/margins", "min": -1.0}, {"loss": 0.2}, False, None),
    ],
)
def test_the_verdict_is_value_at_least_min_or_at_most_max_and_a_missing_metric_fails(gate, evaluation, passed, value):
    verdict = judge(GateSpec.model_validate(gate), Evaluation(200, evaluation))
    assert (verdict.passed, verdict.value, verdict.step) == (passed, value, 200)


def test_a_missing_metric_is_explained_and_reported_as_null():
    verdict = judge(GateSpec.model_validate({"metric": "rewards/margins", "min": 0.1}), Evaluation(7, {"loss": 0.3}))
    assert verdict.termination("s3://w/t")["gate"]["value"] is None
    assert "eval rewards/margins was not reported by the final evaluation at step 7, so it cannot meet the minimum" in (
        verdict.explanation("s3://m/x", "s3://w/t")
    )
    assert judge(GateSpec.model_validate({"metric": "loss", "max": 1}), None).step is None
