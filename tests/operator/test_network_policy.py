"""With ``--network-policy`` the operator gives each job a NetworkPolicy of its own, created through the real
apiserver with the permission the chart grants for it, owned by the job (deleted with it)."""

from __future__ import annotations

import kubernetes
import pytest
from support.chart_rendering import render
from support.fixtures import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE
from support.jobs import job_manifest
from support.kube import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def network_policy_permission(kube_cluster, namespace):
    """The rule the chart adds with networkPolicy.enabled, granted to the operator's ServiceAccount."""
    rules = render({"networkPolicy": {"enabled": True}}).one("ClusterRole")["rules"]
    rule = next(r for r in rules if r["resources"] == ["networkpolicies"])
    rbac = kubernetes.client.RbacAuthorizationV1Api(kube_cluster.admin_client())
    name = f"prefops-netpol-{namespace}"[:63]
    rbac.create_cluster_role({"metadata": {"name": name}, "rules": [rule]})
    rbac.create_cluster_role_binding({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_ACCOUNT, "namespace": OPERATOR_NAMESPACE}],
    })  # fmt: skip
    yield rule
    rbac.delete_cluster_role_binding(name)
    rbac.delete_cluster_role(name)


def test_each_job_gets_its_own_network_policy_owned_by_it(
    jobs, namespace, kube_cluster, start_operator, network_policy_permission
):
    assert network_policy_permission["resources"] == ["networkpolicies"]
    start_operator("--network-policy", "--metrics-from", "kubernetes.io/metadata.name=monitoring")
    spec = {"algorithm": {"name": "simpo"}, "resources": {"nodes": 2}}
    uid = jobs.create(job_manifest("fenced", spec))["metadata"]["uid"]
    jobs.wait_pods("fenced", "train", 2)
    net = kubernetes.client.NetworkingV1Api(kube_cluster.admin_client())
    policy = net.read_namespaced_network_policy("fenced-ingress", namespace)
    assert policy.metadata.owner_references[0].uid == uid
    assert policy.spec.pod_selector.match_labels == {"prefops.dev/job-name": "fenced"}
    rendezvous, metrics = policy.spec.ingress
    assert rendezvous.ports is None  # every port: gloo and NCCL connect on ephemeral ones
    assert rendezvous._from[0].pod_selector.match_labels == {"prefops.dev/job-name": "fenced"}
    assert metrics._from[0].namespace_selector.match_labels == {"kubernetes.io/metadata.name": "monitoring"}
    assert all(c["type"] != "ReplicaFailure" for c in jobs.status("fenced")["conditions"])

    jobs.delete("fenced")
    wait_for(lambda: not net.list_namespaced_network_policy(namespace).items, 60, "the policy garbage-collected")
