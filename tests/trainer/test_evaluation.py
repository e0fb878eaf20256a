"""Evaluation on dataset.evalSplit (docs/contract.md §7): TRL's own numbers, the eval split's reference log-probs
from the cache (no reference model runs), the eval gauges, the phase report, prefops.json and the train phase's
termination message."""

import json
import math

import pytest
from prometheus_client import generate_latest
from support.forward_counter import ForwardCounter
from support.trainer_jobs import TINY, job_doc, write_job

from prefops_trainer.adapters import metrics
from prefops_trainer.core.algorithms import ALGORITHMS
from prefops_trainer.core.spec import parse_job
from prefops_trainer.inputs import load_inputs
from prefops_trainer.phases import export as export_phase
from prefops_trainer.phases import precompute as precompute_phase
from prefops_trainer.phases import train as train_phase
from prefops_trainer.phases.train import trainers

#: The tiny job evaluating on the held-out split at steps 2 and 4 (checkpoints; the last step).
EVALUATED = {
    "dataset": {"source": str(TINY / "prefs-split"), "evalSplit": "test", "maxSamples": 64},
    "training": {"maxSteps": 4, "checkpointEverySteps": 2, "learningRate": 0.01},
}
DPO_METRICS = ALGORITHMS["dpo"].eval_metrics


def eval_batches(inputs) -> int:
    return math.ceil(len(inputs.splits["eval"]) / inputs.spec.training.per_device_batch_size)


def train_watched(inputs, monkeypatch) -> tuple[dict, ForwardCounter, object]:
    """Train ``inputs`` with this process serving metrics, counting the policy backbone's forwards."""
    monkeypatch.setattr(metrics, "_current", metrics.TrainerMetrics(inputs.job.name, inputs.job.namespace))
    seen = {}
    original = trainers.build

    def build_and_watch(inputs, model, *args, **kwargs):
        trainer = original(inputs, model, *args, **kwargs)
        seen["backbone"], seen["trainer"] = ForwardCounter(model.model), trainer
        return trainer

    monkeypatch.setattr(trainers, "build", build_and_watch)
    return train_phase.run(inputs), seen["backbone"], seen["trainer"]


@pytest.fixture
def evaluated(tmp_path, monkeypatch):
    """A LoRA DPO job trained 4 steps with an eval split: (inputs, train report, forward counter, trainer)."""
    inputs = load_inputs(parse_job(job_doc(tmp_path, **EVALUATED)))
    precompute_phase.run(inputs)
    return (inputs, *train_watched(inputs, monkeypatch))


def trl_evaluate(inputs, family: str = "dpo") -> dict[str, float]:
    """TRL's own DPOTrainer's (or KTOTrainer's) evaluate() of the trained adapter on the eval rows, its reference
    log-probs precomputed by TRL itself with the base model (as our trainer runs it: precomputed, from our cache),
    without any of our code."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    config, trainer_class = (DPOConfig, DPOTrainer) if family == "dpo" else (KTOConfig, KTOTrainer)
    base, reference = (AutoModelForCausalLM.from_pretrained(TINY / "model", dtype=torch.float32) for _ in range(2))
    model = PeftModel.from_pretrained(base, inputs.ws.trained.path)
    rows = {name: split.rows.remove_columns(["index"]) for name, split in inputs.splits.items()}
    batch = inputs.spec.training.per_device_batch_size
    args = config(output_dir=str(inputs.ws.local_root / "trl-eval"), per_device_train_batch_size=batch,
                  per_device_eval_batch_size=batch, max_length=64, beta=0.1, precompute_ref_log_probs=True,
                  bf16=False, gradient_checkpointing=False, report_to=[], use_cpu=True)  # fmt: skip
    trainer = trainer_class(
        model=model,
        ref_model=reference,
        args=args,
        train_dataset=rows["train"],
        eval_dataset=rows["eval"],
        processing_class=inputs.tokenizer,
    )
    logged = trainer.evaluate()
    names = ALGORITHMS[inputs.spec.algorithm.name].eval_metrics
    return {name: logged[f"eval_{name}"] for name in names if f"eval_{name}" in logged}


def test_the_final_evaluation_in_prefops_json_is_trls_own_evaluate_of_the_model_on_the_eval_rows(evaluated):
    inputs, report, _, _ = evaluated
    manifest = export_phase.run(inputs)
    ours = manifest["evaluation"]
    assert (ours["split"], ours["step"]) == ("test", 4)
    theirs = trl_evaluate(inputs)
    assert set(ours["metrics"]) == set(theirs) == set(DPO_METRICS)
    for name, value in theirs.items():
        assert ours["metrics"][name] == pytest.approx(value, abs=1e-5), name
    assert ours["metrics"]["rewards/accuracies"] > 0.5, "the trained model prefers the chosen answers it was taught"
    assert report["evaluation"] == ours, "the train phase's report holds the same evaluation"


def test_kto_evaluation_is_trls_own_evaluate_with_the_same_kl_completions(tmp_path, monkeypatch):
    kto = {**EVALUATED, "algorithm": {"name": "kto"}, "training": {**EVALUATED["training"], "perDeviceBatchSize": 4}}
    kto["dataset"] = {**kto["dataset"], "maxSamples": 24}
    inputs = load_inputs(parse_job(job_doc(tmp_path, **kto)))
    precompute_phase.run(inputs)
    report, _, _ = train_watched(inputs, monkeypatch)
    ours, theirs = report["evaluation"]["metrics"], trl_evaluate(inputs, "kto")
    assert {"loss", "kl", "rewards/chosen"} <= set(ours) and set(ours) == set(theirs)
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(value, abs=1e-5), name


def test_it_evaluates_at_every_checkpoint_and_the_last_step_and_serves_the_latest(evaluated):
    _inputs, report, _, _ = evaluated
    assert [e["step"] for e in report["evalHistory"]] == [2, 4]
    assert report["evalHistory"][-1] == {"step": 4, "metrics": report["evaluation"]["metrics"]}
    assert report["evalHistory"][0]["metrics"] != report["evalHistory"][1]["metrics"], "the model changed between"
    served = generate_latest(metrics.current().registry).decode()
    labels = '{job_name="t",job_namespace="default",phase="train"}'
    assert f"prefops_trainer_eval_step{labels} 4.0" in served
    for name, value in report["evaluation"]["metrics"].items():
        gauge = "prefops_trainer_eval_" + name.replace("/", "_")
        assert f"{gauge}{labels} {float(value)!r}" in served, name


def test_training_never_runs_a_reference_model_for_the_eval_split(evaluated):
    inputs, report, backbone, trainer = evaluated
    assert trainer.ref_model is None
    assert backbone.grad == report["steps"], "one policy forward per training micro-batch"
    evaluations = len(report["evalHistory"])
    assert backbone.no_grad == evaluations * eval_batches(inputs), "one policy forward per eval batch, nothing else"


def test_the_counter_sees_trls_reference_forwards_in_evaluation_without_precompute(tmp_path, monkeypatch):
    inputs = load_inputs(parse_job(job_doc(tmp_path, reference={"precompute": False}, **EVALUATED)))
    report, backbone, _ = train_watched(inputs, monkeypatch)
    evaluations = len(report["evalHistory"])
    reference_in_training = report["steps"]
    assert backbone.no_grad == reference_in_training + 2 * evaluations * eval_batches(inputs)


def test_the_train_command_leaves_its_final_evaluation_as_its_termination_message(evaluated, tmp_path, monkeypatch):
    from prefops_operator.core.evaluation import final_evaluation
    from prefops_trainer import cli
    from prefops_trainer.phases import reports

    inputs, _, _, _ = evaluated
    term = tmp_path / "termination-log"
    term.write_text("")
    for key, value in {"PREFOPS_TERMINATION_LOG": str(term), "PREFOPS_METRICS_PORT": "off", "TQDM_DISABLE": "1",
                       "TRANSFORMERS_VERBOSITY": "error", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as done:
        cli.main(["train", str(write_job(tmp_path, **EVALUATED))])  # the same job: it resumes from checkpoint-4
    assert done.value.code == 0
    final = reports.read_train(inputs.ws)["evaluation"]
    message = term.read_text()
    assert "\n" not in message
    evaluation = {"step": final["step"], "metrics": final["metrics"]}
    assert json.loads(message) == {"evaluation": evaluation, "prefixSharing": "on"}, "the tiny Llama runs packed"
    operator_reads = final_evaluation(message, ALGORITHMS["dpo"].eval_metrics)
    assert (operator_reads.step, operator_reads.final) == (final["step"], True)
    assert operator_reads.metrics == {k: round(v, 6) for k, v in final["metrics"].items()}
