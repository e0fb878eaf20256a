"""The command lines and configuration files of the local cluster's components. Stdlib only, no process started.

Every server binds loopback or a node's bridge address. etcd speaks TLS only and asks clients for a certificate of
its own CA. containerd reaches registries only through a proxy on loopback that nobody serves, so a pull of an image
that is not on the node fails here, whatever the pull policy, without a packet or a DNS query leaving the machine.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from layout import (
    ADMISSION_PLUGINS,
    API_PORT,
    CLUSTER_CIDR,
    ETCD_PEER_PORT,
    ETCD_PORT,
    KUBELET_PORT,
    SERVICE_CIDR,
    Layout,
    NodeLayout,
)
from pki import kubeconfig_path

CONF = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("PREFOPS_CACHE") or Path.home() / ".cache" / "prefops")
BIN = CACHE / "kube-1.20.2" / "bin"
PAUSE = "localhost/prefops-pause:3.4.1"
PAUSE_TAR = CACHE / "kube-1.20.2" / "pause" / "pause.tar"
#: where every registry request of a node's containerd goes: loopback, a port nothing listens on
REGISTRY_PROXY = "http://127.0.0.1:9"
CONTROLLERS = (  # endpointslicemirroring: kube-proxy 1.20 reads EndpointSlices, so a hand-written Endpoints needs it
    "garbagecollector,namespace,serviceaccount,serviceaccount-token,endpoint,endpointslice,endpointslicemirroring,"
    "replicaset,deployment,statefulset,job,podgc,nodelifecycle,clusterrole-aggregation,ttl"
)


def images_root(node: NodeLayout) -> Path:
    """The node's containerd root (its images): kept under the cache between runs."""
    return CACHE / "node" / node.name / "containerd"


def fill(template: str, out: Path, values: dict[str, object]) -> None:
    text = (CONF / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise ValueError(f"{template}: no value for {', '.join(sorted(set(left)))}")
    out.write_text(text)


def write_node_config(layout: Layout, node: NodeLayout) -> None:
    for sub in ("cni/net.d", "cni/ipam"):
        (node.dir / sub).mkdir(parents=True, exist_ok=True)
    fill("containerd.toml", node.dir / "containerd.toml", {
        "ROOT": images_root(node), "STATE": node.run_dir / "containerd-state", "SOCKET": node.socket,
        "PAUSE": PAUSE, "RUNC": shutil.which("runc") or "runc", "CNI_CONF": node.dir / "cni" / "net.d",
    })  # fmt: skip
    fill("cni.conflist", node.dir / "cni" / "net.d" / "10-prefops.conflist", {
        "BRIDGE": node.bridge, "POD_CIDR": node.pod_cidr, "NODE_IP": node.ip, "CLUSTER_CIDR": CLUSTER_CIDR,
        "SERVICE_CIDR": SERVICE_CIDR, "IPAM": node.dir / "cni" / "ipam",
    })  # fmt: skip
    fill("kubelet.yaml", node.dir / "kubelet.yaml", {
        "NODE_IP": node.ip, "KUBELET_PORT": KUBELET_PORT, "HEALTHZ_PORT": node.healthz_port,
        "CA": layout.state / "pki" / "ca.crt", "CGROUP_ROOT": node.cgroup, "DNS_IP": layout.control_ip,
        "RESOLV": node.dir / "resolv.conf",
    })  # fmt: skip
    (node.dir / "resolv.conf").write_text(f"nameserver {layout.control_ip}\n")


def etcd(layout: Layout) -> list[str]:
    pki = layout.state / "pki"
    client, peer = f"https://127.0.0.1:{ETCD_PORT}", f"https://127.0.0.1:{ETCD_PEER_PORT}"
    return [
        "etcd", "--name", "prefops", "--data-dir", str(layout.state / "etcd"), "--log-level", "warn",
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--cert-file", str(pki / "etcd-server.crt"), "--key-file", str(pki / "etcd-server.key"),
        "--client-cert-auth", "--trusted-ca-file", str(pki / "etcd-ca.crt"),
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", f"prefops={peer}",
        "--peer-cert-file", str(pki / "etcd-peer.crt"), "--peer-key-file", str(pki / "etcd-peer.key"),
        "--peer-client-cert-auth", "--peer-trusted-ca-file", str(pki / "etcd-ca.crt"),
    ]  # fmt: skip


def kube_apiserver(layout: Layout) -> list[str]:
    pki, ip = layout.state / "pki", layout.control_ip
    return [
        str(BIN / "kube-apiserver"), f"--etcd-servers=https://127.0.0.1:{ETCD_PORT}",
        f"--etcd-cafile={pki / 'etcd-ca.crt'}", f"--etcd-certfile={pki / 'apiserver-etcd-client.crt'}",
        f"--etcd-keyfile={pki / 'apiserver-etcd-client.key'}",
        f"--bind-address={ip}", f"--advertise-address={ip}", f"--secure-port={API_PORT}", "--insecure-port=0",
        f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}", f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'kubelet-client.key'}", "--kubelet-preferred-address-types=InternalIP",
        f"--token-auth-file={layout.state / 'tokens.csv'}", "--authorization-mode=Node,RBAC",
        f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}", f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--service-node-port-range=36000-36099", "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-account-key-file={pki / 'sa.key'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--cert-dir={layout.state / 'apiserver'}", "--enable-priority-and-fairness=false", "--v=1",
    ]  # fmt: skip


def kube_controller_manager(layout: Layout) -> list[str]:
    pki = layout.state / "pki"
    return [
        str(BIN / "kube-controller-manager"), f"--kubeconfig={kubeconfig_path(layout, 'controller-manager')}",
        "--leader-elect=false", "--port=0", "--secure-port=0", "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
        # Kubernetes' default: a node whose kubelet stops reporting is NotReady 40 s later
        "--node-monitor-grace-period=40s", f"--flex-volume-plugin-dir={layout.state / 'volume-plugins'}",
        f"--controllers={CONTROLLERS}", "--v=1",
    ]  # fmt: skip


def kube_scheduler(layout: Layout) -> list[str]:
    return [str(BIN / "kube-scheduler"), f"--kubeconfig={kubeconfig_path(layout, 'scheduler')}",
            "--leader-elect=false", "--port=0", "--secure-port=0", "--v=1"]  # fmt: skip


def kube_proxy(layout: Layout) -> list[str]:
    """One kube-proxy for the machine: every node shares its network namespace, so its iptables rules."""
    addresses = ",".join(f"{n.ip}/32" for n in layout.nodes)
    return [
        str(BIN / "kube-proxy"), f"--kubeconfig={kubeconfig_path(layout, 'proxy')}",
        f"--hostname-override={layout.nodes[0].name}", f"--cluster-cidr={CLUSTER_CIDR}", "--proxy-mode=iptables",
        "--masquerade-all=true", f"--nodeport-addresses={addresses}", "--conntrack-max-per-core=0",
        "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0",
        "--metrics-bind-address=127.0.0.1:30249", "--healthz-bind-address=127.0.0.1:30256",
        "--bind-address=127.0.0.1", "--v=1",
    ]  # fmt: skip


def dns_sync(layout: Layout) -> list[str]:
    pki = layout.state / "pki"
    return ["python3", str(CONF / "dns_sync.py"), layout.api_server, str(pki / "ca.crt"), str(pki / "dns.token"),
            str(layout.run / "dns" / "cluster.hosts")]  # fmt: skip


def dnsmasq(layout: Layout) -> list[str]:
    return [
        "dnsmasq", "--keep-in-foreground", "--log-facility=-", "--user=nobody", "--group=nogroup", "--pid-file=",
        f"--listen-address={layout.control_ip}", "--bind-interfaces", "--port=53", "--no-resolv", "--no-hosts",
        "--local=/cluster.local/", "--domain-needed", "--bogus-priv", f"--hostsdir={layout.run / 'dns'}",
    ]  # fmt: skip


def containerd(node: NodeLayout) -> list[str]:
    return ["containerd", "--config", str(node.dir / "containerd.toml")]


def containerd_env() -> dict[str, str]:
    return {"HTTP_PROXY": REGISTRY_PROXY, "HTTPS_PROXY": REGISTRY_PROXY, "NO_PROXY": "", "http_proxy": REGISTRY_PROXY,
            "https_proxy": REGISTRY_PROXY, "no_proxy": ""}  # fmt: skip


def kubelet(layout: Layout, node: NodeLayout) -> list[str]:
    return [
        str(BIN / "kubelet"), f"--kubeconfig={kubeconfig_path(layout, node.name)}",
        f"--config={node.dir / 'kubelet.yaml'}", "--container-runtime=remote",
        f"--container-runtime-endpoint=unix://{node.socket}", "--runtime-request-timeout=10m",
        f"--hostname-override={node.name}", f"--node-ip={node.ip}", f"--pod-infra-container-image={PAUSE}", "--v=1",
    ]  # fmt: skip
