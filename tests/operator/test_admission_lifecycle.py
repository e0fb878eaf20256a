"""The admission plan with the operator running as its ServiceAccount against a real kube-apiserver: a job that
cannot fit fails WontFit and no pod is ever created (the apiserver's audit log says so), a fitting job's pods carry
the plan's requests, and ``fitCheck: warn`` runs the job anyway with a Warning Event."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.jobs import job_manifest
from support.kube import wait_for

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "model-configs"
OPERATOR_USER = "system:serviceaccount:prefops-system:prefops-operator"


def config_map(kube_cluster, namespace: str, name: str, model: str) -> None:
    data = {"config.json": (CONFIGS / f"{model}.json").read_text()}
    kube_cluster.core().create_namespaced_config_map(namespace, {"metadata": {"name": name}, "data": data})


def test_a_job_that_cannot_fit_fails_wont_fit_and_no_pod_is_ever_created(jobs, namespace, kube_cluster, start_operator):
    config_map(kube_cluster, namespace, "qwen7b", "Qwen--Qwen2.5-7B-Instruct")
    start_operator()
    mark = kube_cluster.audit_mark()
    spec = {"model": {"configMap": "qwen7b"}, "reference": {"precompute": False},
            "resources": {"gpusPerNode": 1, "gpuMemory": "16Gi"}}  # fmt: skip
    jobs.create(job_manifest("huge", spec))
    status = jobs.wait_phase("huge", "Failed")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Failed"]["reason"] == "WontFit"
    assert (conditions["Feasible"]["status"], conditions["Feasible"]["reason"]) == ("False", "WontFit")
    assert "more than 16.0Gi (spec.resources.gpuMemory)" in conditions["Feasible"]["message"]
    assert "To make it fit: " in conditions["Failed"]["message"]
    assert status["plan"]["fits"] is False and status["plan"]["suggestions"]
    jobs.wait_event("huge", "Warning", "WontFit")
    creates = [e for e in kube_cluster.audit_events(OPERATOR_USER, since=mark)
               if e["verb"] == "create" and e["objectRef"]["resource"] == "pods"]  # fmt: skip
    assert creates == [] and jobs.pods("huge") == {}


def test_a_fitting_job_s_pods_request_the_plan_of_their_own_phase(
    jobs, namespace, kube_cluster, kubelet, start_operator
):
    config_map(kube_cluster, namespace, "qwen7b", "Qwen--Qwen2.5-7B-Instruct")
    start_operator()
    spec = {"model": {"configMap": "qwen7b", "lora": {"r": 16}},
            "resources": {"gpusPerNode": 1, "gpuMemory": "80Gi"}}  # fmt: skip
    jobs.create(job_manifest("small", spec))
    precompute = jobs.wait_pods("small", "precompute", 1)
    status = jobs.status("small")
    feasible = jobs.condition("small", "Feasible")
    assert (feasible["status"], feasible["reason"]) == ("True", "Fits")
    planned = status["plan"]["phases"]
    for phase, pods in (("precompute", precompute),):
        pod = next(iter(pods.values()))
        requests = pod.spec.containers[0].resources.requests
        assert (requests["memory"], requests["cpu"]) == (planned[phase]["memory"], planned[phase]["cpu"])
        cache = next(v for v in pod.spec.volumes if v.name == "cache")
        assert cache.empty_dir.size_limit == planned[phase]["cache"]
    columns, rows = kube_cluster.table(f"/apis/prefops.dev/v1alpha1/namespaces/{namespace}/preferencetrainingjobs")
    assert dict(zip(columns, rows[0], strict=True))["Mem/GPU"] == status["plan"]["perDevice"]
    kubelet.run_all(namespace, precompute, exit_code=0)
    train = next(iter(jobs.wait_pods("small", "train", 1).values()))
    assert train.spec.containers[0].resources.requests["memory"] == planned["train"]["memory"]
    kubelet.run_all(namespace, {train.metadata.name: train}, exit_code=0)
    export = next(iter(jobs.wait_pods("small", "export", 1).values()))
    assert export.spec.containers[0].resources.requests["memory"] == planned["export"]["memory"]
    assert planned["export"]["memory"] != planned["train"]["memory"]


def test_fit_check_warn_runs_the_job_that_does_not_fit_and_says_so(jobs, namespace, kube_cluster, start_operator):
    config_map(kube_cluster, namespace, "qwen7b", "Qwen--Qwen2.5-7B-Instruct")
    start_operator()
    spec = {"model": {"configMap": "qwen7b"}, "resources": {"gpusPerNode": 1, "gpuMemory": "16Gi", "fitCheck": "warn"}}
    jobs.create(job_manifest("bold", spec))
    jobs.wait_pods("bold", "precompute", 1)
    assert jobs.condition("bold", "Feasible")["status"] == "False"
    wait_for(lambda: ("Warning", "WontFit") in [e[:2] for e in jobs.events("bold")], 10, "the WontFit warning")


def test_a_plan_that_cannot_be_made_is_skipped_and_says_why(jobs, namespace, start_operator):
    start_operator()
    jobs.create(job_manifest("opaque", {"model": {"source": "s3://models/base"}}))
    jobs.wait_pods("opaque", "precompute", 1)
    feasible = jobs.condition("opaque", "Feasible")
    assert (feasible["status"], feasible["reason"]) == ("Unknown", "PlanSkipped")
    assert "it holds no storage credentials" in feasible["message"]
    pod = next(iter(jobs.pods("opaque").values()))
    assert pod.spec.containers[0].resources.requests == {"cpu": "250m", "memory": "2Gi", "nvidia.com/gpu": "1"}
