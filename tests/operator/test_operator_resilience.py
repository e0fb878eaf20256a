"""The operator can be killed at any moment: a new one picks every job up where it was, never duplicating a pod.
And it reports on itself: Prometheus metrics and a liveness endpoint."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import kubernetes
import pytest
import yaml
from support.fixtures import OPERATOR_USER
from support.jobs import job_manifest
from support.kube import wait_for

pytestmark = pytest.mark.integration
REFERENCE_FREE = {"algorithm": {"name": "simpo"}}


def test_killing_the_operator_mid_phase_neither_duplicates_pods_nor_loses_the_job(
    jobs, kubelet, namespace, start_operator
):
    first = start_operator()
    jobs.create(job_manifest("survivor", {**REFERENCE_FREE, "resources": {"nodes": 3}}))
    pods = jobs.wait_pods("survivor", "train", 3)
    uids = {p.metadata.uid for p in pods.values()}
    kubelet.run_all(namespace, pods)
    first.kill()

    start_operator()
    kubelet.run_all(namespace, pods, exit_code=0)  # the group finishes while (and after) the new operator starts
    jobs.wait_pods("survivor", "export", 1)
    assert {p.metadata.uid for p in jobs.pods("survivor", "train").values()} == uids
    status = jobs.status("survivor")
    assert (status["phase"], status["restarts"]) == ("Exporting", 0)
    events = jobs.wait_event("survivor", "Normal", "ExportingStarted")
    assert [r for _, r, _ in events] == ["TrainingStarted", "ExportingStarted"]


def test_an_operator_killed_while_creating_a_group_creates_each_pod_exactly_once(
    jobs, namespace, kube_cluster, start_operator
):
    mark = kube_cluster.audit_mark()
    first = start_operator()
    jobs.create(job_manifest("burst", {"reference": {"workers": 12}}))
    wait_for(lambda: jobs.pods("burst"), 30, "the first pods")
    first.kill()
    start_operator()
    jobs.wait_pods("burst", "precompute", 12)

    creates = [
        e
        for e in kube_cluster.audit_events(OPERATOR_USER, since=mark)
        if e["verb"] == "create"
        and e["objectRef"].get("resource") == "pods"
        and e["objectRef"].get("namespace") == namespace
    ]
    created = sorted(e["objectRef"]["name"] for e in creates if e["responseStatus"]["code"] == 201)
    assert created == sorted(f"burst-precompute-a1-{i}" for i in range(12))


def test_the_operator_exports_its_metrics_and_a_liveness_endpoint(jobs, kubelet, namespace, start_operator):
    op = start_operator()
    jobs.create(job_manifest("observed", REFERENCE_FREE))
    kubelet.run_all(namespace, jobs.wait_pods("observed", "train", 1))
    kubelet.exit(namespace, "observed-train-a1-0", 1)
    kubelet.run_all(namespace, jobs.wait_pods("observed", "train", 1, attempt=2), exit_code=0)
    kubelet.run_all(namespace, jobs.wait_pods("observed", "export", 1, attempt=2), exit_code=0)
    jobs.wait_phase("observed", "Succeeded")

    samples = wait_for(
        lambda: (m := op.metrics()) and 'prefops_operator_jobs{phase="Succeeded"} 1.0' in m and m, 10, "the jobs gauge"
    )
    for line in [
        'prefops_operator_jobs{phase="Training"} 0.0',
        'prefops_operator_phase_transitions_total{from_phase="Pending",to_phase="Training"} 1.0',
        'prefops_operator_phase_transitions_total{from_phase="Training",to_phase="Training"} 1.0',
        'prefops_operator_phase_transitions_total{from_phase="Exporting",to_phase="Succeeded"} 1.0',
        'prefops_operator_restarts_total{kind="Failure",node="",phase="Training",reason="Error"} 1.0',
        'prefops_operator_job_duration_seconds_count{result="succeeded"} 1.0',
    ]:
        assert line in samples
    assert 'prefops_operator_reconcile_duration_seconds_count{result="ok"}' in samples
    with urllib.request.urlopen(f"http://127.0.0.1:{op.health_port}/healthz", timeout=5) as resp:
        health = json.loads(resp.read())
    assert resp.status == 200
    assert set(health["work-queue"]) == {"queued", "scheduled"}


def test_the_operator_runs_with_only_its_own_dependencies_as_in_its_image(jobs, kubelet, namespace, start_operator):
    from support.operator import image_like_python

    op = start_operator(python=image_like_python())
    jobs.create(job_manifest("lean", REFERENCE_FREE))
    kubelet.run_all(namespace, jobs.wait_pods("lean", "train", 1), exit_code=0)
    jobs.wait_pods("lean", "export", 1)
    assert jobs.status("lean")["phase"] == "Exporting"
    assert op.rss_bytes() < 100 * 2**20  # no kubernetes client imported (it alone is ~45 MB)


def test_a_revoked_token_is_replaced_by_logging_in_again(jobs, namespace, kube_cluster, tmp_path):
    from support.fixtures import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE
    from support.operator import OperatorProcess

    kubeconfig = tmp_path / "operator.kubeconfig"
    old = f"{namespace}-token-a"
    kube_cluster.service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, kubeconfig, bound_to_secret=old)
    old_token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    with OperatorProcess(kubeconfig, tmp_path / "operator.log", namespaces=(namespace,)) as operator:
        jobs.create(job_manifest("before", REFERENCE_FREE))
        jobs.wait_pods("before", "train", 1)
        # rotate: a new token in the kubeconfig, the old one revoked
        kube_cluster.service_account_kubeconfig(
            OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, kubeconfig, bound_to_secret=f"{namespace}-token-b"
        )
        kube_cluster.core().delete_namespaced_secret(old, OPERATOR_NAMESPACE)
        wait_for(lambda: rejected(kube_cluster, old_token), 60, "the apiserver to reject the revoked token")
        jobs.create(job_manifest("after", REFERENCE_FREE))
        jobs.wait_pods("after", "train", 1)
        assert jobs.status("after")["phase"] == "Training"
    assert "credentials rejected (401); logging in again" in operator.tail(200)


def rejected(cluster, token: str) -> bool:
    request = urllib.request.Request(f"{cluster.server}/api", headers={"Authorization": f"Bearer {token}"})
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    try:
        urllib.request.urlopen(request, context=context, timeout=5).close()
    except urllib.error.HTTPError as e:
        return e.code == 401
    return False


def test_a_client_certificate_from_the_kubeconfig_leaves_no_key_file_behind(jobs, namespace, kube_cluster, tmp_path):
    from support.operator import OperatorProcess

    user = f"prefops-cert-{namespace}"[:60]
    rbac = kubernetes.client.RbacAuthorizationV1Api(kube_cluster.admin_client())
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "prefops-operator"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }
    )
    kubeconfig = kube_cluster.client_certificate_kubeconfig(user, tmp_path / "cert.kubeconfig")
    temp = tmp_path / "tmp"
    temp.mkdir()
    try:
        with OperatorProcess(kubeconfig, tmp_path / "operator.log", (namespace,), env={"TMPDIR": str(temp)}):
            jobs.create(job_manifest("certified", REFERENCE_FREE))
            jobs.wait_pods("certified", "train", 1)  # the reconciler's own session is up, logged in by certificate
            assert list(temp.iterdir()) == []  # while it runs
        assert list(temp.iterdir()) == []  # and after
    finally:
        rbac.delete_cluster_role_binding(user)
