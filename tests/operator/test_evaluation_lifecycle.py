"""Evaluation and the quality gate on a real kube-apiserver: the operator shows the trainer's evaluation in the job's
status (scraped from the trainer's metrics while it trains, then the final one from the training pod's termination
message), and a job whose export refuses to publish (exit code 3, docs/contract.md §8) ends Failed/GateNotMet."""

from __future__ import annotations

import json

import pytest
from support.jobs import job_manifest
from support.trainer_metrics import TrainerMetricsServer

pytestmark = pytest.mark.integration

EVAL_METRICS = """\
prefops_trainer_step{job_name="gated",job_namespace="ns",phase="train"} 35
prefops_trainer_total_steps{job_name="gated",job_namespace="ns",phase="train"} 60
prefops_trainer_eval_step{job_name="gated",job_namespace="ns",phase="train"} 30
prefops_trainer_eval_loss{job_name="gated",job_namespace="ns",phase="train"} 0.61
prefops_trainer_eval_rewards_accuracies{job_name="gated",job_namespace="ns",phase="train"} 0.66
"""
GATED = {
    "algorithm": {"name": "simpo"},
    "dataset": {"evalSplit": "test"},
    "output": {"gate": {"metric": "rewards/accuracies", "min": 0.8}},
    "backoffLimit": 4,
}


def test_a_job_shows_its_evaluation_and_fails_gate_not_met_when_its_export_refuses_to_publish(
    jobs, kubelet, namespace, kube_cluster, start_operator
):
    with TrainerMetricsServer() as metrics:
        start_operator("--progress-interval", "0.3", "--trainer-metrics-port", str(metrics.port))
        jobs.create(job_manifest("gated", GATED))
        (train,) = jobs.wait_pods("gated", "train", 1)
        metrics.text = EVAL_METRICS
        kubelet.run(namespace, train)
        status = jobs.wait_status("gated", lambda s: "evaluation" in s, "the scraped evaluation")
        assert status["evaluation"] == {
            "step": 30,
            "metrics": {"loss": 0.61, "rewards/accuracies": 0.66},
            "final": False,
        }
        columns, rows = kube_cluster.table(f"/apis/prefops.dev/v1alpha1/namespaces/{namespace}/preferencetrainingjobs")
        assert dict(zip(columns, rows[0], strict=True))["EvalLoss"] == 0.61

        final = {"evaluation": {"step": 60, "metrics": {"loss": 0.58, "rewards/accuracies": 0.7}}}
        kubelet.exit(namespace, train, 0, message=json.dumps(final))
        (export,) = jobs.wait_pods("gated", "export", 1)
    status = jobs.status("gated")
    assert status["evaluation"] == {"step": 60, "metrics": {"loss": 0.58, "rewards/accuracies": 0.7}, "final": True}

    verdict = {"gate": {"metric": "rewards/accuracies", "value": 0.7, "min": 0.8, "step": 60,
                        "trained": "s3://work/prefops/jobs/t/gated/uid/trained"}}  # fmt: skip
    kubelet.run(namespace, export)
    kubelet.exit(namespace, export, 3, message=json.dumps(verdict))
    status = jobs.wait_phase("gated", "Failed")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "GateNotMet"
    assert failed["message"] == (
        "spec.output.gate is not met: eval rewards/accuracies at step 60 is 0.7, below the minimum 0.8 "
        "(output.gate.min); the model was not written to s3://models/gated; the trained weights stay in "
        "s3://work/prefops/jobs/t/gated/uid/trained"
    )
    assert (status["restarts"], "outputURI" in status) == (0, False)
    assert list(jobs.pods("gated", "export")) == [export]  # not retried; kept for its log
    jobs.wait_event("gated", "Warning", "GateNotMet")
