"""The operator's ClusterRole grants exactly what it uses: the apiserver's audit log of a run that touches every
code path (watch, create, restart, status, events, an operator restart, TTL deletion; a sweep creating and suspending
its trial) shows every granted verb used, and none denied. The finalizers' update is the exception: the admission
plugin checking blockOwnerDeletion authorizes it without a call (tests/operator/test_owner_references.py)."""

from __future__ import annotations

import pytest
import yaml
from support.fixtures import OPERATOR_USER
from support.jobs import job_manifest
from support.kube import ROOT, wait_for
from support.sweeps import sweep_manifest

pytestmark = pytest.mark.integration
#: granted for an admission plugin's check (OwnerReferencesPermissionEnforcement: blockOwnerDeletion), never called;
#: tests/operator/test_owner_references.py shows them needed
ADMISSION_ONLY = {
    ("prefops.dev", "preferencetrainingjobs/finalizers", "update"),
    ("prefops.dev", "preferencetrainingsweeps/finalizers", "update"),
}


def granted() -> set[tuple[str, str, str]]:
    docs = yaml.safe_load_all((ROOT / "operator" / "rbac" / "operator.yaml").read_text())
    role = next(d for d in docs if d and d["kind"] == "ClusterRole")
    return {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }


def test_the_operator_uses_every_permission_it_is_granted_and_is_denied_none(
    jobs, sweeps, kubelet, namespace, kube_cluster, start_operator
):
    mark = kube_cluster.audit_mark()
    first = start_operator(all_namespaces=True)
    jobs.create(job_manifest("audited", {"algorithm": {"name": "orpo"}, "ttlSecondsAfterFinished": 0}))
    pod = next(iter(jobs.wait_pods("audited", "train", 1)))
    first.stop()  # a new operator finds the job's ConfigMap and Service made (409) and checks their owner
    operator = start_operator(all_namespaces=True)
    kubelet.run(namespace, pod)
    kubelet.exit(namespace, pod, 1)  # a restart: the operator deletes the failed group
    pod = next(iter(jobs.wait_pods("audited", "train", 1, attempt=2)))
    kubelet.run(namespace, pod)
    kubelet.exit(namespace, pod, 0)
    pod = next(iter(jobs.wait_pods("audited", "export", 1, attempt=2)))
    kubelet.run(namespace, pod)
    kubelet.exit(namespace, pod, 0)
    wait_for(lambda: not jobs.exists("audited"), 30, "the TTL deletion")
    # a sweep: its trial created (after a dry run), its status written, the trial suspended
    sweep = sweep_manifest("audited-sweep", {"trials": [{"algorithm.beta": 2.0}]}, {"algorithm": {"name": "simpo"}})
    del sweep["spec"]["parameters"]
    sweeps.create(sweep)
    jobs.wait_pods("audited-sweep-0", "train", 1)
    sweeps.patch_spec("audited-sweep", {"suspend": True})
    wait_for(lambda: jobs.get("audited-sweep-0")["spec"]["suspend"], 30, "the trial suspended by its sweep")
    sweeps.wait_phase("audited-sweep", "Suspended")
    operator.stop()  # the apiserver audits a watch when it ends

    # this test's namespace and cluster-wide calls (the watches); other tests' namespaces may be terminating
    def audited():
        return [
            e
            for e in kube_cluster.audit_events(OPERATOR_USER, since=mark)
            if "objectRef" in e and e["objectRef"].get("namespace") in (None, namespace)
        ]

    events = wait_for(lambda: (ev := audited()) and any(e["verb"] == "watch" for e in ev) and ev, 30, "watches")
    ref = [
        (
            e["objectRef"].get("apiGroup", ""),
            e["objectRef"]["resource"],
            e["objectRef"].get("subresource"),
            e["verb"],
            e["responseStatus"]["code"],
        )
        for e in events
    ]
    used = {(g, f"{r}/{sub}" if sub else r, verb) for g, r, sub, verb, _ in ref}
    assert [r for r in ref if r[4] == 403] == []
    assert used == granted() - ADMISSION_ONLY


def test_a_namespace_editor_may_create_jobs_and_sweeps_together_and_a_viewer_only_read_them(kube_cluster, namespace):
    import kubernetes

    kube_cluster.apply_manifests(ROOT / "operator" / "rbac" / "users")  # prefops-edit and prefops-view, aggregated
    rbac = kubernetes.client.RbacAuthorizationV1Api(kube_cluster.admin_client())
    for user, role in (("alice", "edit"), ("bob", "view")):
        rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        })  # fmt: skip
    authz = kubernetes.client.AuthorizationV1Api(kube_cluster.admin_client())

    def may(user: str, verb: str, resource: str) -> bool:
        attributes = {"namespace": namespace, "verb": verb, "group": "prefops.dev", "resource": resource}
        review = {"spec": {"user": user, "resourceAttributes": attributes}}
        return bool(authz.create_subject_access_review(review).status.allowed)

    wait_for(lambda: may("alice", "create", "preferencetrainingsweeps"), 60, "prefops-edit aggregated into edit")
    wait_for(lambda: may("bob", "list", "preferencetrainingsweeps"), 60, "prefops-view aggregated into view")
    assert may("alice", "create", "preferencetrainingjobs") and may("alice", "delete", "preferencetrainingsweeps")
    assert may("bob", "get", "preferencetrainingjobs") and may("bob", "get", "preferencetrainingsweeps")
    assert not may("bob", "create", "preferencetrainingsweeps") and not may("bob", "create", "preferencetrainingjobs")
    assert not may("carol", "create", "preferencetrainingsweeps")
