"""Every object the chart renders, for every value set, goes through the real kube-apiserver (1.20, the oldest
the chart supports) with server-side apply and dry-run as a cluster admin: it must be accepted (server-side apply
refuses a field the kind's schema does not declare) and come back as sent. ServiceMonitor and PodMonitor are
checked against the Prometheus Operator's CRDs (tests/chart/fixtures). Then the operator is
started as the chart starts it, with the chart's namespaced RBAC, and runs a job."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from dockerfile_parse import DockerfileParser
from support.chart_rendering import ROOT, VALUE_SETS, container, render
from support.jobs import Jobs, job_manifest
from support.kube import KubeCluster, free_port, wait_for
from support.operator import OperatorProcess, image_like_python

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent / "fixtures"
FIELD_MANAGER = "prefops-chart-test"
MISSING = object()


@pytest.fixture(scope="module")
def dynamic(kube_cluster: KubeCluster) -> Any:
    """A dynamic client as admin, with the ServiceMonitor and PodMonitor CRDs installed."""
    kube_cluster.apply_crds(FIXTURES)
    return kubernetes.dynamic.DynamicClient(kube_cluster.admin_client())


@pytest.fixture(scope="module")
def namespaces(kube_cluster: KubeCluster) -> Iterator[Callable[..., None]]:
    """``namespaces(*names)`` creates them; the module deletes them (and what is in them) when it ends, so the
    session's other tests, an operator watching every namespace among them, find nothing of these tests."""
    created: set[str] = set()

    def create(*names: str) -> None:
        for name in names:
            created.add(kube_cluster.create_namespace(name))

    yield create
    for name in created:
        kube_cluster.core().delete_namespace(name)


def apply(dynamic: Any, obj: dict[str, Any], dry_run: bool = True) -> dict[str, Any]:
    """Server-side apply ``obj`` (with dry-run: validated, admitted and defaulted, never stored)."""
    api = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    result = dynamic.server_side_apply(
        api,
        body=obj,
        namespace=obj["metadata"].get("namespace"),
        field_manager=FIELD_MANAGER,
        force_conflicts=True,
        **({"dry_run": "All"} if dry_run else {}),
    )
    return dict(result.to_dict())


def dropped(sent: Any, stored: Any, path: str = "") -> list[str]:
    """Where ``stored`` lacks or changed what was ``sent`` (defaults the apiserver adds are fine)."""
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [f"{path or '.'}: stored {stored!r}"]
        return [d for k, v in sent.items() for d in dropped(v, stored.get(k, MISSING), f"{path}.{k}")]
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [f"{path}: stored {stored!r}"]
        return [d for i, (a, b) in enumerate(zip(sent, stored, strict=True)) for d in dropped(a, b, f"{path}[{i}]")]
    return [] if sent == stored else [f"{path}: sent {sent!r}, stored {'nothing' if stored is MISSING else stored!r}"]


def namespaces_of(values: dict[str, Any], release_namespace: str) -> set[str]:
    return {
        release_namespace,
        *values.get("watchNamespaces", ()),
        values.get("dashboards", {}).get("namespace") or release_namespace,
    }


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_rendered_object_is_accepted_by_the_apiserver_and_stored_as_sent(name, namespaces, dynamic):
    values, release_namespace = VALUE_SETS[name], f"chart-{name}"
    namespaces(*namespaces_of(values, release_namespace))
    rendered = render(values, namespace=release_namespace)
    assert rendered.objects
    for obj in rendered.objects:
        stored = apply(dynamic, obj)
        assert dropped(obj, stored) == [], f"{obj['kind']} {obj['metadata']['name']}"


def test_a_misspelt_field_or_a_bad_monitor_interval_does_not_pass_unnoticed(namespaces, dynamic):
    """The check above can fail: server-side apply refuses a field the kind's schema does not declare, built-in
    kinds and the monitors' CRDs alike, and those CRDs validate the values they declare."""
    namespaces("chart-negative")
    rendered = render({"serviceMonitor": {"enabled": True}}, namespace="chart-negative")
    deployment = copy.deepcopy(rendered.one("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes.client.ApiException, match="readOnlyRootFileSystem: field not declared in schema"):
        apply(dynamic, deployment)
    monitor = copy.deepcopy(rendered.one("ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["scrapeTimout"] = "10s"
    with pytest.raises(kubernetes.client.ApiException, match="scrapeTimout: field not declared in schema"):
        apply(dynamic, monitor)
    monitor["spec"]["endpoints"][0] = {"port": "metrics", "interval": "30 seconds"}
    with pytest.raises(kubernetes.client.ApiException, match=r"spec\.endpoints\.interval"):
        apply(dynamic, monitor)


# -- the operator as the chart runs it -------------------------------------------------------------------------


def image_entrypoint() -> list[str]:
    with (ROOT / "images" / "operator" / "Dockerfile").open("rb") as f:
        structure = DockerfileParser(fileobj=f).structure
    return list(json.loads(next(i["value"] for i in structure if i["instruction"] == "ENTRYPOINT")))


def test_the_operator_started_with_the_charts_arguments_and_namespaced_rbac_runs_jobs_in_its_namespaces_only(
    kube_cluster, namespaces, dynamic, tmp_path
):
    release_ns, watched, unwatched = "chart-run-system", "chart-run-team", "chart-run-other"
    namespaces(release_ns, watched, unwatched)
    values = {
        "watchNamespaces": [watched],
        "crds": {"enabled": False},  # the session's cluster has it already
        "trainer": {"image": {"repository": "registry.example.com/ml/trainer", "tag": "t1", "pullPolicy": "Never"}},
    }
    rendered = render(values, namespace=release_ns)
    for obj in rendered.objects:
        if obj["kind"] != "Deployment":  # no kubelet here: the operator runs as a local process instead
            apply(dynamic, obj, dry_run=False)
    operator = container(rendered)
    assert "command" not in operator and image_entrypoint() == ["python", "-m", "prefops_operator"]
    account = rendered.one("ServiceAccount")["metadata"]["name"]
    metrics, health = free_port(), free_port()  # the pod's ports, moved off 8080/8081 of this machine
    process = OperatorProcess(
        kube_cluster.service_account_kubeconfig(release_ns, account),
        tmp_path / "operator.log",
        extra_args=(
            *operator["args"],
            "--bind-address=127.0.0.1",
            f"--metrics-port={metrics}",
            f"--health-port={health}",
        ),
        python=image_like_python(),
        metrics_port=metrics,
        health_port=health,
    )
    mark = kube_cluster.audit_mark()
    other_jobs = Jobs(kube_cluster.custom(), kube_cluster.core(), unwatched)
    jobs = Jobs(kube_cluster.custom(), kube_cluster.core(), watched)
    try:
        other_jobs.create(job_manifest("elsewhere", {"algorithm": {"name": "orpo"}}))
        process.start()
        jobs.create(job_manifest("watched", {"algorithm": {"name": "orpo"}}))
        (trainer,) = jobs.wait_pods("watched", "train", 1).values()
        wait_for(lambda: jobs.status("watched").get("phase") == "Training", 30, "the watched job's status")
    finally:
        process.stop()
        print(f"--- {process.log}\n{process.tail()}")
    assert trainer.spec.containers[0].image == "registry.example.com/ml/trainer:t1"
    assert trainer.spec.containers[0].image_pull_policy == "Never"
    assert other_jobs.status("elsewhere") == {} and other_jobs.pods("elsewhere", "train") == {}
    user = f"system:serviceaccount:{release_ns}:{account}"
    requests = [e for e in kube_cluster.audit_events(user, since=mark) if "objectRef" in e]
    assert requests, "the operator made no request"
    cluster_wide = {e["objectRef"]["resource"] for e in requests if e["objectRef"].get("namespace") is None}
    assert cluster_wide == {"nodes"}, "cluster-wide, the operator only reads nodes"
    assert {e["objectRef"].get("namespace") for e in requests} - {None} == {watched}
    assert [e for e in requests if e["responseStatus"]["code"] == 403] == []
