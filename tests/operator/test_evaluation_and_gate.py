"""Evaluation results and the quality gate on the operator's side (docs/contract.md §7, §8): what it reads from the
trainer's metrics and termination messages, how the job's status and phase follow, and the gate's spec checks.
Pure, no server."""

from __future__ import annotations

import json

import pytest
from support.operator_core import at, group, make_job, pod

from prefops_operator.core.algorithms import ALGORITHMS
from prefops_operator.core.evaluation import (
    GATE_NOT_MET_EXIT_CODE,
    Evaluation,
    evaluation_from_metrics,
    final_evaluation,
    gate_message,
    gauge_name,
)
from prefops_operator.core.machine import Observed, decide
from prefops_operator.core.naming import PodPhase
from prefops_operator.core.progress import parse_exposition
from prefops_operator.core.status import Phase, Status
from prefops_operator.core.validation import semantic_problems

DPO = ALGORITHMS["dpo"].eval_metrics
EVAL_TEXT = """\
prefops_trainer_step{job_name="j",job_namespace="ns",phase="train"} 130.0
prefops_trainer_eval_step{job_name="j",job_namespace="ns",phase="train"} 120.0
prefops_trainer_eval_loss{job_name="j",job_namespace="ns",phase="train"} 0.5512
prefops_trainer_eval_rewards_accuracies{job_name="j",job_namespace="ns",phase="train"} 0.71875
prefops_trainer_eval_rewards_margins{job_name="j",job_namespace="ns",phase="train"} NaN
prefops_trainer_eval_unknown_metric{job_name="j",job_namespace="ns",phase="train"} 3.0
"""
GATED = {"dataset": {"evalSplit": "test"}, "output": {"gate": {"metric": "rewards/accuracies", "min": 0.6}}}


def test_gauge_names_replace_what_prometheus_names_cannot_hold():
    assert gauge_name("rewards/accuracies") == "prefops_trainer_eval_rewards_accuracies"
    assert gauge_name("loss") == "prefops_trainer_eval_loss"
    assert gauge_name("log_odds_ratio") == "prefops_trainer_eval_log_odds_ratio"


def test_the_scraped_evaluation_is_the_eval_gauges_of_the_algorithm_at_the_eval_step():
    evaluation = evaluation_from_metrics(parse_exposition(EVAL_TEXT), DPO)
    assert evaluation == Evaluation(120, {"loss": 0.5512, "rewards/accuracies": 0.71875})  # NaN and unknown dropped
    assert not evaluation.final


def test_no_evaluation_is_scraped_before_the_trainer_has_evaluated():
    text = "\n".join(line for line in EVAL_TEXT.splitlines() if "eval_step" not in line)
    assert evaluation_from_metrics(parse_exposition(text), DPO) is None


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            json.dumps({"evaluation": {"step": 200, "metrics": {"loss": 0.5, "rewards/accuracies": 0.75}}}),
            Evaluation(200, {"loss": 0.5, "rewards/accuracies": 0.75}, final=True),
        ),
        (json.dumps({"evaluation": {"step": 200, "metrics": {"nope": 1.0, "loss": "low"}}}), None),
        (json.dumps({"evaluation": {"step": "200", "metrics": {"loss": 0.5}}}), None),
        (json.dumps({"cacheHit": True}), None),
        ("Traceback (most recent call last): ...", None),
        (None, None),
    ],
    ids=["documented", "unknown-and-non-numbers", "step-not-int", "other-json", "text", "none"],
)
def test_the_final_evaluation_is_read_from_the_termination_message_and_nothing_else_is_trusted(message, expected):
    assert final_evaluation(message, DPO) == expected


def test_a_final_evaluation_is_replaced_by_no_scrape_but_a_scraped_one_by_a_newer_one():
    scraped, final = Evaluation(100, {"loss": 0.6}), Evaluation(200, {"loss": 0.5}, final=True)
    assert final.newer_than(scraped) and Evaluation(110, {"loss": 0.59}).newer_than(scraped)
    assert not Evaluation(300, {"loss": 0.4}).newer_than(final)
    assert not Evaluation(100, {"loss": 0.6}).newer_than(scraped)


def test_a_training_job_shows_the_scraped_evaluation_then_the_final_one_when_training_succeeds():
    job = make_job(spec={"algorithm": {"name": "simpo"}, "dataset": {"evalSplit": "test"}})
    status = decide(Status(), Observed(job), at(0)).status
    assert status.phase == Phase.TRAINING
    live = evaluation_from_metrics(parse_exposition(EVAL_TEXT), ALGORITHMS["simpo"].eval_metrics)
    status = decide(status, Observed(job, tuple(group(job, PodPhase.TRAIN, 1)), evaluation=live), at(1)).status
    assert status.evaluation == Evaluation(120, {"loss": 0.5512, "rewards/accuracies": 0.71875})
    assert status.to_dict()["evaluation"] == {
        "step": 120,
        "metrics": {"loss": 0.5512, "rewards/accuracies": 0.71875},
        "final": False,
    }

    result = json.dumps({"evaluation": {"step": 150, "metrics": {"loss": 0.5, "rewards/accuracies": 0.8}}})
    done = [pod(job, PodPhase.TRAIN, 0, "Succeeded", message=result)]
    status = decide(status, Observed(job, tuple(done)), at(2)).status
    assert status.phase == Phase.EXPORTING
    assert status.evaluation == Evaluation(150, {"loss": 0.5, "rewards/accuracies": 0.8}, final=True)
    assert Status.from_dict(status.to_dict()).evaluation == status.evaluation


def test_a_training_group_that_reports_no_evaluation_keeps_the_last_scraped_one():
    job = make_job(spec={"algorithm": {"name": "simpo"}, "dataset": {"evalSplit": "test"}})
    status = decide(Status(), Observed(job), at(0)).status
    live = Evaluation(120, {"loss": 0.55})
    status = decide(status, Observed(job, tuple(group(job, PodPhase.TRAIN, 1)), evaluation=live), at(1)).status
    status = decide(status, Observed(job, tuple(group(job, PodPhase.TRAIN, 1, "Succeeded"))), at(2)).status
    assert status.evaluation == live


def exporting(spec):
    job = make_job(spec={"algorithm": {"name": "simpo"}, **spec})
    status = decide(Status(), Observed(job), at(0)).status
    status = decide(status, Observed(job, tuple(group(job, PodPhase.TRAIN, 1, "Succeeded"))), at(1)).status
    assert status.phase == Phase.EXPORTING
    return job, status


def test_an_export_that_refuses_to_publish_fails_the_job_with_gate_not_met_naming_metric_value_and_bound():
    job, status = exporting(GATED)
    verdict = {"gate": {"metric": "rewards/accuracies", "value": 0.55, "min": 0.6, "step": 150,
                        "trained": "s3://work/prefops/jobs/team-a/qwen-dpo/uid-1234/trained"}}  # fmt: skip
    export = pod(job, PodPhase.EXPORT, 0, "Failed", exit_code=GATE_NOT_MET_EXIT_CODE, message=json.dumps(verdict))
    decision = decide(status, Observed(job, (export,)), at(2))
    failed = decision.status.condition("Failed")
    assert (decision.status.phase, failed.reason, decision.status.restarts) == (Phase.FAILED, "GateNotMet", 0)
    assert failed.message == (
        "spec.output.gate is not met: eval rewards/accuracies at step 150 is 0.55, below the minimum 0.6 "
        "(output.gate.min); the model was not written to s3://models/qwen-dpo; the trained weights stay in "
        "s3://work/prefops/jobs/team-a/qwen-dpo/uid-1234/trained"
    )
    assert [(t.reason, t.warning) for t in decision.transitions] == [("GateNotMet", True)]


def test_a_gate_verdict_that_is_not_the_documented_json_is_shown_as_text_and_still_not_retried():
    job, status = exporting({**GATED, "backoffLimit": 5})
    export = pod(job, PodPhase.EXPORT, 0, "Failed", exit_code=GATE_NOT_MET_EXIT_CODE, message="accuracy too low")
    status = decide(status, Observed(job, (export,)), at(2)).status
    assert status.condition("Failed").reason == "GateNotMet"
    assert status.condition("Failed").message == "spec.output.gate is not met: accuracy too low"


def test_exit_code_3_from_another_phase_than_export_is_an_ordinary_failure_that_restarts_the_group():
    job = make_job(spec={"algorithm": {"name": "simpo"}})
    status = decide(Status(), Observed(job), at(0)).status
    crashed = pod(job, PodPhase.TRAIN, 0, "Failed", exit_code=GATE_NOT_MET_EXIT_CODE, message="killed")
    status = decide(status, Observed(job, (crashed,)), at(1)).status
    assert (status.phase, status.restarts) == (Phase.TRAINING, 1)


def test_a_missing_metric_and_a_max_bound_are_named_too():
    gate = {"gate": {"metric": "loss", "value": None, "max": 0.4, "step": 10}}
    assert "eval loss at step 10 was not reported by the final evaluation (output.gate.max)" in gate_message(
        json.dumps(gate), None, "s3://m/x"
    )
    gate = {"gate": {"metric": "loss", "value": 0.7, "max": 0.4}}
    assert "eval loss is 0.7, above the maximum 0.4 (output.gate.max)" in gate_message(json.dumps(gate), None, "s3://m")


GATE_CASES = [
    (
        {"dataset": {"evalSplit": "test"}, "output": {"gate": {"metric": "rewards/accuracies", "min": 0.6}}},
        {"algorithm": {"name": "kto"}},
        "spec.output.gate.metric: 'rewards/accuracies' is not an evaluation metric of algorithm 'kto'; valid: loss, ",
    ),
    (
        {"output": {"gate": {"metric": "loss", "max": 0.5}}},
        {},
        "spec.output.gate: needs spec.dataset.evalSplit, the split the gate's metric is measured on",
    ),
    (
        {"dataset": {"evalSplit": "test"}, "output": {"gate": {"metric": "loss", "min": 0.1, "max": 0.5}}},
        {},
        "spec.output.gate: set exactly one of min and max, got both",
    ),
    (
        {"dataset": {"evalSplit": "test"}, "output": {"gate": {"metric": "loss"}}},
        {},
        "spec.output.gate: set exactly one of min and max, got neither",
    ),
    (
        {"dataset": {"evalSplit": "test"}, "output": {"gate": {"metric": "loss", "max": 0.5}}},
        {"algorithm": {"name": "online-dpo"}, "rewardModel": {"source": "hf://org/rm"}},
        "spec.output.gate: algorithm 'online-dpo' reports no evaluation metrics, so there is nothing to gate on",
    ),
]


@pytest.mark.parametrize(("gate", "extra", "message"), GATE_CASES, ids=[m.split(":")[1][:30] for *_, m in GATE_CASES])
def test_a_gate_the_schema_cannot_check_fails_the_job_naming_the_field(gate, extra, message):
    problems = semantic_problems(make_job(spec={**gate, **extra, "output": {"uri": "s3://m/x", **gate["output"]}}).spec)
    assert any(p.startswith(message) for p in problems), problems


def test_a_valid_gate_passes_the_checks():
    assert semantic_problems(make_job(spec=GATED).spec) == []
