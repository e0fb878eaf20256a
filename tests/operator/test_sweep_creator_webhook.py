"""A sweep is not a confused deputy (``--check-sweep-creators``), against a real kube-apiserver: the operator serves
the chart's mutating webhook (its configuration as the chart renders it, pointed at the operator on loopback and
limited to the test's namespace), which records each sweep's creator; the operator, as its ServiceAccount, creates a
sweep's trials only when a SubjectAccessReview says that user may create jobs. Users are real client-certificate
users: alice may create sweeps but not jobs, bob may create both (the prefops-edit role)."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest
from support.chart_rendering import render
from support.kube import ROOT, KubeCluster, free_port, wait_for
from support.sweeps import Sweeps, sweep_manifest

from prefops_operator.core.creators import CREATOR_ANNOTATION

pytestmark = pytest.mark.integration
REFERENCE_FREE = {"algorithm": {"name": "simpo"}}  # no trial waits for another's reference pass
SELECTED = "prefops.dev/test-sweep-creators"  # the label that puts a test's namespace under its webhook


@dataclass
class Webhook:
    port: int
    certs: Path
    install: Callable[[], None]

    def flags(self) -> tuple[str, ...]:
        key = f"--creator-key-file={self.certs / 'creator.key'}"
        return ("--check-sweep-creators", f"--webhook-port={self.port}", f"--webhook-cert-dir={self.certs}", key)


@pytest.fixture
def webhook(kube_cluster: KubeCluster, namespace: str, tmp_path: Path) -> Iterator[Webhook]:
    """The chart's webhook configuration for an operator on 127.0.0.1 (``install()`` creates it and waits until the
    apiserver calls it), with a serving certificate from the cluster's CA; the operator's right to review access."""
    kube_cluster.apply_manifests(ROOT / "operator" / "rbac" / "sweep-creators")
    port, certs = free_port(), kube_cluster.serving_certificate(tmp_path / "webhook")
    (certs / "creator.key").write_text(secrets.token_hex(32))
    config = render({"sweepCreators": {"enabled": True}}).one("MutatingWebhookConfiguration")
    config["metadata"]["name"] = f"{namespace}-sweep-creators"
    (hook,) = config["webhooks"]
    path = hook["clientConfig"]["service"]["path"]
    ca_bundle = base64.b64encode(kube_cluster.ca_file.read_bytes()).decode()
    hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca_bundle}
    hook["namespaceSelector"] = {"matchLabels": {SELECTED: namespace}}  # other tests' sweeps are not its business
    kube_cluster.core().patch_namespace(namespace, {"metadata": {"labels": {SELECTED: namespace}}})
    admission = kubernetes.client.AdmissionregistrationV1Api(kube_cluster.admin_client())
    probe = Sweeps(kube_cluster.custom(), kube_cluster.core(), namespace)

    def called() -> bool:
        return CREATOR_ANNOTATION in probe.create(sweep_manifest("probe"), dry_run=True)["metadata"]["annotations"]

    installed: list[str] = []

    def install() -> None:
        installed.append(admission.create_mutating_webhook_configuration(config).metadata.name)
        wait_for(called, 30, "the apiserver calling the operator's webhook")

    yield Webhook(port, certs, install)
    for name in installed:
        admission.delete_mutating_webhook_configuration(name)


def user_sweeps(kube_cluster: KubeCluster, namespace: str, user: str, tmp_path: Path) -> Sweeps:
    """The namespace's sweeps as ``user``, authenticated by a client certificate of the cluster's CA."""
    client = KubeCluster.client_for(kube_cluster.client_certificate_kubeconfig(user, tmp_path / f"{user}.kubeconfig"))
    return Sweeps(kubernetes.client.CustomObjectsApi(client), kube_cluster.core(), namespace)


def bind(kube_cluster: KubeCluster, namespace: str, user: str, kind: str, role: str) -> None:
    rbac = kubernetes.client.RbacAuthorizationV1Api(kube_cluster.admin_client())
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": f"{user}-{role}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    })  # fmt: skip


def grant_roles(kube_cluster: KubeCluster, namespace: str) -> None:
    """alice: sweeps only (a Role); bob: the prefops-edit ClusterRole (jobs and sweeps)."""
    kube_cluster.apply_manifests(ROOT / "operator" / "rbac" / "users")
    rbac = kubernetes.client.RbacAuthorizationV1Api(kube_cluster.admin_client())
    rules = [{"apiGroups": ["prefops.dev"], "resources": ["preferencetrainingsweeps"],
              "verbs": ["get", "list", "watch", "create", "update", "patch"]}]  # fmt: skip
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "sweeps-only"}, "rules": rules})
    bind(kube_cluster, namespace, "alice", "Role", "sweeps-only")
    bind(kube_cluster, namespace, "bob", "ClusterRole", "prefops-edit")


def creator(sweeps: Sweeps, name: str) -> dict:
    return dict(json.loads(sweeps.get(name)["metadata"]["annotations"][CREATOR_ANNOTATION]))


def trial_jobs(kube_cluster: KubeCluster, namespace: str, sweep: str) -> list[str]:
    found = kube_cluster.custom().list_namespaced_custom_object(
        "prefops.dev", "v1alpha1", namespace, "preferencetrainingjobs", label_selector=f"prefops.dev/sweep={sweep}"
    )
    return [j["metadata"]["name"] for j in found["items"]]


def test_a_sweep_by_a_user_who_may_not_create_jobs_gets_no_trial_and_says_why_until_the_user_may(
    kube_cluster, namespace, sweeps, jobs, webhook, start_operator, tmp_path
):
    grant_roles(kube_cluster, namespace)
    start_operator(*webhook.flags())
    webhook.install()
    alice = user_sweeps(kube_cluster, namespace, "alice", tmp_path)
    bob = user_sweeps(kube_cluster, namespace, "bob", tmp_path)
    forged = sweep_manifest("alices", template=REFERENCE_FREE)
    forged["metadata"]["annotations"] = {CREATOR_ANNOTATION: json.dumps({"username": "bob", "groups": []})}
    alice.create(forged)
    assert creator(sweeps, "alices")["username"] == "alice"  # recorded from the request, not from the manifest
    assert "system:authenticated" in creator(sweeps, "alices")["groups"]

    held = wait_for(lambda: sweeps.condition("alices", "ReplicaFailure"), 30, "alice's sweep held")
    assert (held["status"], held["reason"]) == ("True", "CreatorForbidden")
    assert f'"alice" may not create preferencetrainingjobs.prefops.dev in namespace {namespace}' in held["message"]
    events = sweeps.wait_event("alices", "Warning", "CreatorForbidden")
    assert [m for t, r, m in events if r == "CreatorForbidden"] == [held["message"]]  # one Event, not one per retry

    bob.create(sweep_manifest("bobs", template=REFERENCE_FREE))
    assert creator(sweeps, "bobs")["username"] == "bob"
    wait_for(lambda: jobs.exists("bobs-0") and jobs.exists("bobs-1"), 30, "bob's trials")
    sweeps.wait_phase("bobs", "Running")
    assert trial_jobs(kube_cluster, namespace, "alices") == [] and sweeps.status("alices")["phase"] == "Pending"

    with pytest.raises(kubernetes.client.ApiException, match="cannot change") as refused:
        alice.custom.patch_namespaced_custom_object("prefops.dev", "v1alpha1", namespace, alice.plural, "alices",
                                                    {"metadata": {"annotations": {CREATOR_ANNOTATION: None}}})  # fmt: skip
    assert refused.value.status == 403 and creator(sweeps, "alices")["username"] == "alice"

    bind(kube_cluster, namespace, "alice", "ClusterRole", "prefops-edit")  # now alice may create jobs too
    wait_for(lambda: jobs.exists("alices-0"), 90, "alice's first trial, at most a backoff later")
    sweeps.wait_status("alices", lambda s: s["phase"] == "Running" and not sweeps.condition("alices", "ReplicaFailure"),
                       "running, the refusal gone")  # fmt: skip


def test_a_sweep_created_while_the_webhook_was_not_installed_has_no_creator_whatever_it_claims_and_gets_no_trial(
    kube_cluster, namespace, sweeps, webhook, start_operator
):
    start_operator(*webhook.flags())
    around = sweep_manifest("around", template=REFERENCE_FREE)  # before the webhook is there, claiming a cluster admin
    admin = {"username": "admin", "uid": "", "groups": ["system:masters"], "signature": "0" * 64}
    around["metadata"]["annotations"] = {CREATOR_ANNOTATION: json.dumps(admin)}
    sweeps.create(around)
    held = wait_for(lambda: sweeps.condition("around", "ReplicaFailure"), 30, "the sweep held")
    assert held["reason"] == "CreatorUnknown" and f"no {CREATOR_ANNOTATION} annotation signed" in held["message"]
    webhook.install()
    with pytest.raises(kubernetes.client.ApiException, match="cannot change"):  # nor can one be added afterwards
        sweeps.custom.patch_namespaced_custom_object("prefops.dev", "v1alpha1", namespace, sweeps.plural, "around",
                                                     {"metadata": {"annotations": {CREATOR_ANNOTATION: "{}"}}})  # fmt: skip
    sweeps.create(sweep_manifest("after", template=REFERENCE_FREE))  # the same admin, now through the webhook
    wait_for(lambda: trial_jobs(kube_cluster, namespace, "after"), 30, "the trials of the sweep created after")
    assert trial_jobs(kube_cluster, namespace, "around") == []
    assert sweeps.status("around")["phase"] == "Pending"
