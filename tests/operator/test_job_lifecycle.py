"""The operator against a real kube-apiserver + etcd (+ controller-manager for garbage collection), running as its
ServiceAccount; pods are moved through their lifecycle by a kubelet stand-in patching pods/status."""

from __future__ import annotations

import pytest
import yaml
from support.jobs import job_manifest
from support.kube import wait_for
from support.trainer_metrics import TrainerMetricsServer

from prefops_operator.core.conditions import ConditionType, FailureReason, Reason

pytestmark = pytest.mark.integration

TRAIN_METRICS = {"step": 120, "total_steps": 1000, "epoch": 0.36, "loss": 0.42, "reward_accuracy": 0.81}
REFERENCE_FREE = {"algorithm": {"name": "simpo"}}


def env_of(pod):
    return {e.name: e.value for e in pod.spec.containers[0].env}


def test_a_dpo_job_runs_precompute_training_and_export_to_succeeded(
    jobs, kubelet, namespace, kube_cluster, start_operator
):
    with TrainerMetricsServer() as metrics:
        start_operator("--progress-interval", "0.3", "--trainer-metrics-port", str(metrics.port), all_namespaces=True)
        spec = {"reference": {"workers": 2}, "resources": {"nodes": 2, "gpusPerNode": 8}}
        uid = jobs.create(job_manifest("qwen", spec))["metadata"]["uid"]

        precompute = jobs.wait_pods("qwen", "precompute", 2)
        assert jobs.status("qwen")["phase"] == "Precomputing"
        assert [p.spec.containers[0].args[2:] for _, p in sorted(precompute.items())] == [
            ["--shard", "0", "--num-shards", "2"],
            ["--shard", "1", "--num-shards", "2"],
        ]
        config = kube_cluster.core().read_namespaced_config_map("qwen-config", namespace)
        assert yaml.safe_load(config.data["job.yaml"])["metadata"] == {
            "name": "qwen",
            "namespace": namespace,
            "uid": uid,
        }
        kubelet.run_all(namespace, precompute, exit_code=0)

        train = jobs.wait_pods("qwen", "train", 2)
        assert env_of(train["qwen-train-a1-1"])["PREFOPS_NODE_RANK"] == "1"
        assert env_of(train["qwen-train-a1-1"])["PREFOPS_MASTER_ADDR"] == "qwen-train-a1-0.qwen-train"
        assert train["qwen-train-a1-0"].spec.containers[0].resources.limits == {"nvidia.com/gpu": "8"}
        assert kube_cluster.core().read_namespaced_service("qwen-train", namespace).spec.cluster_ip == "None"
        metrics.show("qwen", namespace, "train", **TRAIN_METRICS)
        kubelet.run_all(namespace, train)
        progress = jobs.wait_status("qwen", lambda s: s.get("progress", {}).get("step") == 120, "progress")["progress"]
        assert (progress["display"], progress["loss"], progress["rewardAccuracy"]) == ("120/1000", 0.42, 0.81)
        columns, rows = kube_cluster.table(f"/apis/prefops.dev/v1alpha1/namespaces/{namespace}/preferencetrainingjobs")
        assert dict(zip(columns, rows[0], strict=True)) | {"Age": "-"} == {
            "Name": "qwen",
            "Phase": "Training",
            "Algorithm": "dpo",
            "Nodes×GPUs": "2x8",
            "Mem/GPU": None,  # no plan: hf:// and no Hub here (test_admission_lifecycle plans)
            "Progress": "120/1000",
            "Loss": 0.42,
            "RewardAcc": 0.81,
            "EvalLoss": None,
            "Restarts": 0,
            "Disruptions": 0,
            "Output": None,
            "Age": "-",
        }

        kubelet.run_all(namespace, train, exit_code=0)
        export = jobs.wait_pods("qwen", "export", 1)
        kubelet.run_all(namespace, export, exit_code=0)
        status = jobs.wait_phase("qwen", "Succeeded")

    assert status["outputURI"] == "s3://models/qwen"
    assert set(status["phases"]) == {"precompute", "train", "export"}
    assert all("completionTime" in times for times in status["phases"].values())
    assert {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]} == {
        "Feasible": ("Unknown", "PlanSkipped"),
        "Running": ("False", "Succeeded"),
        "Succeeded": ("True", "Exported"),
    }
    reasons = [reason for _, reason, _ in jobs.wait_event("qwen", "Normal", Reason.SUCCEEDED)]
    assert reasons == ["PrecomputingStarted", "TrainingStarted", "ExportingStarted", Reason.SUCCEEDED]
    job = jobs.get("qwen")
    assert not job["metadata"].get("finalizers")  # deletable even while the operator is down
    assert status["observedGeneration"] == job["metadata"]["generation"]


def test_a_failed_rank_restarts_the_whole_group_which_then_resumes_and_finishes(
    jobs, kubelet, namespace, start_operator
):
    start_operator()
    jobs.create(job_manifest("rank", {**REFERENCE_FREE, "resources": {"nodes": 3}}))
    first = jobs.wait_pods("rank", "train", 3, attempt=1)
    first_uids = {p.metadata.uid for p in first.values()}
    kubelet.run_all(namespace, first)
    kubelet.exit(namespace, "rank-train-a1-2", 1, message="RuntimeError: NCCL communicator was aborted")

    second = jobs.wait_pods("rank", "train", 3, attempt=2)
    assert not first_uids & {p.metadata.uid for p in second.values()}  # every rank recreated, not only the failed
    assert {env_of(p)["PREFOPS_ATTEMPT"] for p in second.values()} == {"2"}
    status = jobs.status("rank")
    assert (status["phase"], status["restarts"]) == ("Training", 1)
    assert status["lastFailure"]["pod"] == "rank-train-a1-2"
    assert status["lastFailure"]["message"] == "RuntimeError: NCCL communicator was aborted"
    jobs.wait_event("rank", "Warning", "Restarting")

    kubelet.run_all(namespace, second, exit_code=0)
    jobs.wait_pods("rank", "export", 1, attempt=2)
    assert jobs.status("rank")["phase"] == "Exporting"


def test_when_the_backoff_limit_is_exhausted_the_job_fails_with_the_pods_reason_and_exit_code(
    jobs, kubelet, namespace, start_operator
):
    start_operator()
    jobs.create(job_manifest("flaky", {**REFERENCE_FREE, "backoffLimit": 1, "resources": {"nodes": 2}}))
    kubelet.run_all(namespace, jobs.wait_pods("flaky", "train", 2, attempt=1))
    kubelet.exit(namespace, "flaky-train-a1-0", 3)
    kubelet.run_all(namespace, jobs.wait_pods("flaky", "train", 2, attempt=2))
    kubelet.exit(namespace, "flaky-train-a2-1", 137, reason="OOMKilled")

    status = jobs.wait_phase("flaky", "Failed")
    failed = next(c for c in status["conditions"] if c["type"] == ConditionType.FAILED)
    assert failed["reason"] == Reason.BACKOFF_LIMIT_EXCEEDED
    assert failed["message"].startswith("pod flaky-train-a2-1 failed (OOMKilled, exit code 137)")
    assert status["restarts"] == 1
    # the rank still running is stopped; the failed pod stays for its logs
    remaining = wait_for(lambda: (p := jobs.pods("flaky", "train")) and len(p) == 1 and p, 30, "running rank gone")
    assert list(remaining) == ["flaky-train-a2-1"]


def test_exit_code_2_means_invalid_input_and_fails_at_once_without_retrying(jobs, kubelet, namespace, start_operator):
    start_operator()
    jobs.create(job_manifest("badinput", {"backoffLimit": 5}))
    kubelet.run_all(namespace, jobs.wait_pods("badinput", "precompute", 1))
    kubelet.exit(
        namespace,
        "badinput-precompute-a1-0",
        2,
        message="s3://prefs/ultrafeedback.jsonl row 7: field 'chosen' is missing",
    )
    status = jobs.wait_phase("badinput", "Failed")
    failed = next(c for c in status["conditions"] if c["type"] == ConditionType.FAILED)
    assert failed["reason"] == Reason.INVALID_INPUT
    assert "row 7: field 'chosen' is missing" in failed["message"]
    assert status["restarts"] == 0


def test_a_pod_stuck_pulling_its_image_fails_the_attempt_at_the_startup_deadline(
    jobs, kubelet, namespace, start_operator
):
    start_operator()
    jobs.create(
        job_manifest(
            "stuck",
            {
                **REFERENCE_FREE,
                "startupDeadlineSeconds": 3,  # whole seconds: 2-3 s, time for the kubelet stand-in to act
                "backoffLimit": 0,
                "resources": {"image": "registry.invalid/trainer:nope"},
            },
        )
    )
    kubelet.image_pull_backoff(namespace, next(iter(jobs.wait_pods("stuck", "train", 1))))
    status = jobs.wait_phase("stuck", "Failed")
    assert status["lastFailure"]["reason"] == FailureReason.STARTUP_DEADLINE_EXCEEDED
    assert "ImagePullBackOff: Back-off pulling image" in status["lastFailure"]["message"]
    wait_for(lambda: not jobs.pods("stuck"), 30, "the stuck pod deleted")


def test_active_deadline_seconds_bounds_the_whole_job(jobs, kubelet, namespace, start_operator):
    start_operator()
    jobs.create(job_manifest("slow", {**REFERENCE_FREE, "activeDeadlineSeconds": 3}))  # 2-3 s in whole seconds
    kubelet.run_all(namespace, jobs.wait_pods("slow", "train", 1))
    status = jobs.wait_phase("slow", "Failed")
    failed = next(c for c in status["conditions"] if c["type"] == ConditionType.FAILED)
    assert failed["reason"] == Reason.DEADLINE_EXCEEDED
    wait_for(lambda: not jobs.pods("slow"), 30, "running pods deleted")


def test_suspend_deletes_the_running_pods_and_resume_continues_from_the_unfinished_phase(
    jobs, kubelet, namespace, start_operator
):
    start_operator()
    jobs.create(job_manifest("pausable", {"resources": {"nodes": 2}}))
    kubelet.run_all(namespace, jobs.wait_pods("pausable", "precompute", 1), exit_code=0)
    kubelet.run_all(namespace, jobs.wait_pods("pausable", "train", 2))

    jobs.patch_spec("pausable", {"suspend": True})
    status = jobs.wait_phase("pausable", "Suspended")
    wait_for(lambda: not jobs.pods("pausable", "train"), 30, "training pods deleted")
    assert list(jobs.pods("pausable", "precompute")) == ["pausable-precompute-a1-0"]  # finished: kept
    assert "completionTime" in status["phases"]["precompute"]

    jobs.patch_spec("pausable", {"suspend": False})
    jobs.wait_pods("pausable", "train", 2, attempt=2)  # new names: the suspended pods may still be terminating
    status = jobs.wait_phase("pausable", "Training")
    assert status["restarts"] == 0
    assert [r for _, r, _ in jobs.wait_event("pausable", "Normal", Reason.RESUMED)][-2:] == [
        Reason.SUSPENDED,
        Reason.RESUMED,
    ]


def test_deleting_a_job_deletes_its_pods_service_and_config(jobs, kubelet, namespace, kube_cluster, start_operator):
    start_operator()
    jobs.create(job_manifest("doomed", {**REFERENCE_FREE, "resources": {"nodes": 2}}))
    jobs.wait_pods("doomed", "train", 2)
    core = kube_cluster.core()
    jobs.delete("doomed")

    def children_gone() -> bool:
        services = [s.metadata.name for s in core.list_namespaced_service(namespace).items]
        configs = [c.metadata.name for c in core.list_namespaced_config_map(namespace).items]
        return not jobs.pods("doomed") and "doomed-train" not in services and "doomed-config" not in configs

    wait_for(children_gone, 60, "garbage collection of the job's children")


def test_a_finished_job_is_deleted_after_ttl_seconds_after_finished(jobs, kubelet, namespace, start_operator):
    start_operator()
    jobs.create(job_manifest("shortlived", {**REFERENCE_FREE, "ttlSecondsAfterFinished": 1}))
    kubelet.run_all(namespace, jobs.wait_pods("shortlived", "train", 1), exit_code=0)
    kubelet.run_all(namespace, jobs.wait_pods("shortlived", "export", 1), exit_code=0)
    wait_for(lambda: not jobs.exists("shortlived"), 30, "the job deleted by its TTL")
    wait_for(lambda: not jobs.pods("shortlived"), 60, "its pods garbage-collected")


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        (
            {"algorithm": {"name": "cpo", "lossType": ["sft"]}},
            "spec.algorithm.lossType",
            "not valid for algorithm 'cpo'",
        ),
        ({"output": {"uri": "/models/out"}}, "spec.output.uri", "must be an s3://bucket/prefix URI"),
        ({"training": {"epochz": 3}}, "spec.training.epochz", "unknown field; did you mean 'epochs'?"),
    ],
)
def test_a_spec_the_schema_cannot_catch_fails_at_once_with_invalid_spec_and_creates_nothing(
    jobs, namespace, kube_cluster, start_operator, spec, field, message
):
    start_operator()
    jobs.create(job_manifest("typo", spec))
    status = jobs.wait_phase("typo", "Failed")
    failed = next(c for c in status["conditions"] if c["type"] == ConditionType.FAILED)
    assert failed["reason"] == Reason.INVALID_SPEC
    assert failed["message"].startswith(f"{field}: ") and message in failed["message"]
    jobs.wait_event("typo", "Warning", "InvalidSpec")
    assert not jobs.pods("typo")
    assert not kube_cluster.core().list_namespaced_config_map(namespace, label_selector="prefops.dev/job-name").items
