"""blockOwnerDeletion needs RBAC: with the apiserver's OwnerReferencesPermissionEnforcement admission plugin on (the
operator tests' apiserver and the node cluster alike: scripts/cluster/layout.py ``ADMISSION_PLUGINS``), whoever sets
``blockOwnerDeletion: true`` on an owner reference must be allowed to update the owner's finalizers. The operator sets
it on every child (a job's pods, ConfigMap and Service; a sweep's trial jobs), and its ClusterRole grants exactly that
update (operator/rbac/operator.yaml, the chart's rules)."""

from __future__ import annotations

import pytest
from support.jobs import job_manifest
from support.sweeps import sweep_manifest

pytestmark = pytest.mark.integration
REFERENCE_FREE = {"algorithm": {"name": "simpo"}}


def owner_reference(job: dict, block: bool) -> dict:
    return {"apiVersion": job["apiVersion"], "kind": job["kind"], "name": job["metadata"]["name"],
            "uid": job["metadata"]["uid"], "controller": True, "blockOwnerDeletion": block}  # fmt: skip


def test_the_apiserver_refuses_block_owner_deletion_to_whoever_may_not_update_the_owners_finalizers(
    jobs, kube_cluster, namespace
):
    import kubernetes

    job = jobs.create(job_manifest("owner", {**REFERENCE_FREE, "suspend": True}))
    rbac = kubernetes.client.RbacAuthorizationV1Api(kube_cluster.admin_client())
    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "maker"}, "rules": [rule]})
    subject = {"kind": "ServiceAccount", "name": "maker", "namespace": namespace}
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "maker"}
    rbac.create_namespaced_role_binding(namespace, {"metadata": {"name": "maker"}, "subjects": [subject],
                                                    "roleRef": role_ref})  # fmt: skip
    maker = kubernetes.client.CoreV1Api(
        kube_cluster.client_for(kube_cluster.service_account_kubeconfig(namespace, "maker"))
    )

    def config_map(name: str, block: bool) -> dict:
        return {"metadata": {"name": name, "ownerReferences": [owner_reference(job, block)]}}

    with pytest.raises(kubernetes.client.ApiException) as refused:
        maker.create_namespaced_config_map(namespace, config_map("blocking", True))
    assert refused.value.status == 403
    assert "cannot set blockOwnerDeletion" in refused.value.body
    maker.create_namespaced_config_map(namespace, config_map("owned", False))  # the plugin asks only for blocking


def test_the_operator_sets_block_owner_deletion_on_a_jobs_children_and_a_sweeps_trials_under_its_own_rbac(
    jobs, sweeps, namespace, kube_cluster, start_operator
):
    start_operator()
    jobs.create(job_manifest("owned", REFERENCE_FREE))
    sweeps.create(sweep_manifest("owning"))

    (pod,) = jobs.wait_pods("owned", "train", 1).values()
    (trial_pod,) = jobs.wait_pods("owning-0", "precompute", 1).values()
    for owned in (pod, trial_pod):
        assert [r.block_owner_deletion for r in owned.metadata.owner_references] == [True]
    config = kube_cluster.core().read_namespaced_config_map("owned-config", namespace)
    assert [r.block_owner_deletion for r in config.metadata.owner_references] == [True]
    trial = jobs.get("owning-0")
    assert [(r["kind"], r["blockOwnerDeletion"]) for r in trial["metadata"]["ownerReferences"]] == [
        ("PreferenceTrainingSweep", True)
    ]
    assert sweeps.status("owning")["phase"] == "Running"
