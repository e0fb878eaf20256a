"""The test cluster's nodes themselves (``make cluster NODES=2``): two real kubelets with their own containerd,
cgroups and pod network, and what ``kill-node`` and ``restore-node`` do to them.

1. Both nodes are Ready, each with its own pod range, and a pod on one reaches a pod on the other.
2. A node killed (kubelet, containerd, shims and every process of its pods) goes NotReady while the API keeps its
   pods; restored, it is Ready again, the pod deleted meanwhile has nothing left on it and the pod that stayed runs
   once, with new processes: nothing of the killed node survives, nothing runs twice.
3. A node whose kubelet alone is killed keeps its containers running; restored, its kubelet adopts the containers
   of the pod that stayed (the same processes, not a second copy) and stops those of the pod deleted meanwhile.
4. The cluster trusts no other local user: its credentials are root's alone, and etcd talks TLS to clients with a
   certificate of its own CA only.
5. Nothing leaves this machine, enforced: a pull of an absent image (pull policy Always) fails on loopback, never
   reaching a registry; a pod's connection to an outside address through a Service is dropped by the cluster's own
   FORWARD rule, which stays ahead of kube-proxy's (whose KUBE-FORWARD accepts such traffic).
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest
from support.kube import wait_for
from support.node import STATE, Cluster, layout

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

IMAGE = "prefops/trainer:dev"
START_TIMEOUT = 120


@pytest.fixture(scope="module")
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"nodes-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def pod(name: str, node: str, command: list[str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": IMAGE, "imagePullPolicy": "Never", "command": command}],
        },
    }


def start_sleepers(cluster: Cluster, namespace: str, node: str, *names: str) -> dict[str, str]:
    """Pods that sleep on ``node``, running; name → UID."""
    cluster.apply([pod(n, node, ["sleep", "3600"]) for n in names], namespace=namespace)
    for name in names:
        cluster.kubectl("wait", "--for=condition=Ready", f"pod/{name}", f"--timeout={START_TIMEOUT}s",
                        namespace=namespace, timeout=START_TIMEOUT + 10)  # fmt: skip
    core = cluster.core()
    return {n: core.read_namespaced_pod(n, namespace).metadata.uid for n in names}


def on_node(processes: dict[str, list[int]], uids: dict[str, str]) -> dict[str, list[int]]:
    """Pod name → its processes, for the pods named in ``uids`` that have processes."""
    return {name: processes[uid] for name, uid in uids.items() if uid in processes}


def strays(cluster: Cluster, node: str) -> set[str]:
    """UIDs of pods with processes on ``node`` that the API does not bind to it (left running)."""
    bound = {p.metadata.uid for p in cluster.core().list_pod_for_all_namespaces().items if p.spec.node_name == node}
    return set(cluster.pod_processes(node)) - bound


def force_delete(cluster: Cluster, namespace: str, name: str) -> None:
    """What the operator (or a user) does with a pod of a dead node: it goes from the API at once."""
    cluster.kubectl("delete", "pod", name, "--grace-period=0", "--force", "--wait=false", namespace=namespace)


def test_both_nodes_are_ready_with_their_own_pod_range_and_pods_reach_each_other_across_them(cluster, namespace):
    assert len(cluster.nodes) == 2, cluster.nodes
    assert {n: cluster.node_ready(n) for n in cluster.nodes} == {n: "True" for n in cluster.nodes}
    first, second = cluster.nodes
    server = pod("listener", first, ["python3", "-m", "http.server", "8080"])
    client = pod("caller", second, ["sleep", "3600"])
    cluster.apply([server, client], namespace=namespace)
    for name in ("listener", "caller"):
        cluster.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=120s", namespace=namespace)
    listener = cluster.core().read_namespaced_pod("listener", namespace)
    caller = cluster.core().read_namespaced_pod("caller", namespace)
    assert (listener.spec.node_name, caller.spec.node_name) == (first, second)
    for p in (listener, caller):  # each node gives its pods addresses of its own range
        assert ipaddress.ip_address(p.status.pod_ip) in ipaddress.ip_network(cluster.pod_range(p.spec.node_name))
    url = f"http://{listener.status.pod_ip}:8080/"
    fetch = f"import urllib.request; print(urllib.request.urlopen('{url}', timeout=10).status)"
    out = wait_for(lambda: cluster.kubectl("exec", "caller", "--", "python3", "-c", fetch, namespace=namespace),
                   60, "a pod on one node to reach a pod on the other", interval=1)  # fmt: skip
    assert out.strip() == "200"
    cluster.kubectl("delete", "pod", "listener", "caller", "--wait=false", namespace=namespace)


def test_a_killed_node_comes_back_ready_with_nothing_left_running_and_nothing_running_twice(cluster, namespace):
    node = cluster.nodes[-1]
    uids = start_sleepers(cluster, namespace, node, "kept", "deleted")
    before = on_node(cluster.pod_processes(node), uids)
    assert set(before) == set(uids), f"both pods run on {node}: {before}"
    old = set(cluster.node_processes(node))

    with cluster.node_down(node):
        assert cluster.node_processes(node) == [], "the kubelet, containerd, shims and pods all died"
        waited = cluster.wait_node_not_ready(node, timeout=120)
        pods = {p.metadata.name for p in cluster.core().list_namespaced_pod(namespace).items}
        assert {"kept", "deleted"} <= pods, "killing a node removes nothing from the API"
        force_delete(cluster, namespace, "deleted")
    assert cluster.node_ready(node) == "True"

    def kept_running_once() -> dict[str, list[int]] | None:
        now = on_node(cluster.pod_processes(node), uids)
        return now if set(now) == {"kept"} and len(now["kept"]) == 2 and not strays(cluster, node) else None

    # the kept pod again as one sandbox and one container (2 processes); nothing of the deleted one, or of any
    # pod the API does not bind to the node
    wait_for(kept_running_once, 90, f"only the kept pod running on {node}, once", interval=1)
    assert not old & set(cluster.node_processes(node)), "no process of the killed node survived"
    cluster.kubectl("wait", "--for=condition=Ready", "pod/kept", "--timeout=60s", namespace=namespace)
    print(f"{node} went NotReady {waited:.0f} s after the kill")
    cluster.kubectl("delete", "pod", "kept", "--wait=false", namespace=namespace)


def test_a_node_whose_kubelet_alone_died_keeps_its_containers_and_its_restored_kubelet_adopts_or_stops_them(
    cluster, namespace
):
    node = cluster.nodes[-1]
    uids = start_sleepers(cluster, namespace, node, "adopted", "orphaned")
    before = on_node(cluster.pod_processes(node), uids)
    assert set(before) == set(uids), f"both pods run on {node}: {before}"

    with cluster.node_down(node, kubelet_only=True):
        assert on_node(cluster.pod_processes(node), uids) == before, "the containers go on without their kubelet"
        force_delete(cluster, namespace, "orphaned")

    def orphan_stopped() -> dict[str, list[int]] | None:
        now = on_node(cluster.pod_processes(node), uids)
        return now if "orphaned" not in now and not strays(cluster, node) else None

    now = wait_for(orphan_stopped, 90, f"the restored kubelet to stop the deleted pod's containers on {node}")
    assert now == {"adopted": before["adopted"]}, "the kept pod's containers were adopted, not started again"
    cluster.kubectl("delete", "pod", "adopted", "--wait=false", namespace=namespace)


def test_a_pull_of_an_absent_image_fails_on_this_machine_whatever_the_pull_policy_and_registry(cluster, namespace):
    images = {"absent-hub": "docker.io/prefops/absent:1", "absent-ghcr": "ghcr.io/prefops/absent:1"}
    pods = []
    for name, image in images.items():
        manifest = pod(name, cluster.nodes[0], ["sleep", "1"])
        manifest["spec"]["containers"][0].update(image=image, imagePullPolicy="Always")
        pods.append(manifest)
    cluster.apply(pods, namespace=namespace)

    def pull_errors() -> dict[str, str] | None:
        found = {}
        for name in images:
            state = cluster.core().read_namespaced_pod(name, namespace).status.container_statuses
            waiting = state and state[0].state.waiting
            if waiting and waiting.reason in ("ErrImagePull", "ImagePullBackOff") and waiting.message:
                found[name] = waiting.message
        return found if len(found) == len(images) else None

    errors = wait_for(pull_errors, 120, "both pulls to fail", interval=1)
    for name, message in errors.items():
        # containerd's only connection: the registry proxy on loopback, where nothing listens (no DNS query either)
        assert re.search(r"proxyconnect tcp: dial tcp 127\.0\.0\.1:9: connect: connection refused", message), message
        assert images[name] in message
    cluster.kubectl("delete", "pod", *images, "--wait=false", namespace=namespace)


def nat_rules() -> str:
    return subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True, check=True).stdout


def dropped_by_the_cluster_firewall() -> int:
    """Packets the cluster's own FORWARD chain dropped so far (iptables counters)."""
    out = subprocess.run(["iptables-save", "-c", "-t", "filter"], capture_output=True, text=True, check=True).stdout
    counts = re.findall(r"^\[(\d+):\d+\] -A PREFOPS-NODE .*-j DROP$", out, re.M)
    return sum(int(c) for c in counts)


def test_a_pod_reaches_no_outside_address_even_through_a_service_and_the_clusters_forward_rule_comes_first(
    cluster, namespace
):
    forward = [r for r in subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True,
                                         check=True).stdout.splitlines() if r.startswith("-A")]  # fmt: skip
    assert forward[0] == "-A FORWARD -j PREFOPS-NODE", forward
    assert any("KUBE-FORWARD" in r for r in forward[1:]), "kube-proxy's rules come after ours"
    # a Service whose endpoint is outside (TEST-NET-3): kube-proxy marks the traffic, and its KUBE-FORWARD would
    # accept it whatever its destination
    outside = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "outside"},
         "spec": {"ports": [{"port": 80, "targetPort": 80}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "outside"},
         "subsets": [{"addresses": [{"ip": "203.0.113.7"}], "ports": [{"port": 80}]}]},
        pod("prober", cluster.nodes[-1], ["sleep", "3600"]),
    ]  # fmt: skip
    cluster.apply(outside, namespace=namespace)
    cluster.kubectl("wait", "--for=condition=Ready", "pod/prober", "--timeout=120s", namespace=namespace)
    service_ip = cluster.core().read_namespaced_service("outside", namespace).spec.cluster_ip
    # until kube-proxy has seen the Endpoints, it rejects the Service (connection refused): wait for its DNAT
    wait_for(lambda: "--to-destination 203.0.113.7:80" in nat_rules(), 60, "kube-proxy's rule for the endpoint")
    before = dropped_by_the_cluster_firewall()
    probe = (
        "import socket, sys\n"
        f"try: socket.create_connection(('{service_ip}', 80), timeout=3); sys.exit('connected')\n"
        "except OSError as e: print(type(e).__name__)"
    )
    out = cluster.kubectl("exec", "prober", "--", "python3", "-c", probe, namespace=namespace)
    assert out.strip() in ("timeout", "TimeoutError"), out
    assert dropped_by_the_cluster_firewall() > before, "the cluster's own rule dropped the pod's packets"
    cluster.kubectl("delete", "pod", "prober", "--wait=false", namespace=namespace)


def test_the_clusters_credentials_are_roots_alone_and_etcd_admits_only_clients_of_its_own_ca(cluster):
    credentials = [
        cluster.kubeconfig,
        STATE / "tokens.csv",
        *(STATE / "kubeconfigs").iterdir(),
        *(STATE / "pki").iterdir(),
    ]
    shared = {str(p.relative_to(STATE)): oct(p.stat().st_mode & 0o777) for p in credentials if p.stat().st_mode & 0o077}
    assert not shared, f"credentials others may read: {shared}"
    assert STATE.stat().st_mode & 0o077 == 0, "nobody else may even enter the state folder"

    health = f"https://127.0.0.1:{layout.ETCD_PORT}/health"
    pki = STATE / "pki"
    with pytest.raises(OSError):  # no plain HTTP
        urllib.request.urlopen(health.replace("https", "http"), timeout=5)
    anonymous = ssl.create_default_context(cafile=str(pki / "etcd-ca.crt"))
    with pytest.raises((ssl.SSLError, OSError)):  # TLS without a client certificate: refused
        urllib.request.urlopen(health, context=anonymous, timeout=5).read()
    foreign = ssl.create_default_context(cafile=str(pki / "etcd-ca.crt"))
    foreign.load_cert_chain(pki / "kubelet-client.crt", pki / "kubelet-client.key")  # the cluster CA's, system:masters
    with pytest.raises((ssl.SSLError, OSError)):
        urllib.request.urlopen(health, context=foreign, timeout=5).read()
    apiserver = ssl.create_default_context(cafile=str(pki / "etcd-ca.crt"))
    apiserver.load_cert_chain(pki / "apiserver-etcd-client.crt", pki / "apiserver-etcd-client.key")
    with urllib.request.urlopen(health, context=apiserver, timeout=5) as response:
        assert json.load(response)["health"] == "true"
