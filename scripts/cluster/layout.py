"""The shape of the local test cluster: its nodes' names, addresses, ports and paths. Stdlib only.

One control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy and cluster DNS) and
``count`` nodes. A node is what a machine of a real cluster would be, made of this machine's parts:

- its own kubelet and containerd (images, state, socket), CNI bridge ``prefops<i>`` with address ``10.244.<i>.1``
  and pod range ``10.244.<i>.0/24``, and node name ``prefops-node-<i>``;
- its own cgroup root ``/prefops-node-<i>``: its pods under ``kubepods``, its kubelet, containerd and shims under
  ``node``, so every process of the node is found (and killed) by its cgroup;
- its own mount namespace (kept in a file under the runtime folder), where the host paths a kubelet and containerd
  use whatever their flags say (``/var/lib/kubelet``, ``/var/log/pods``, ``/run/containerd``, ``/run/netns``...)
  are the node's own folders: two kubelets on one machine otherwise delete each other's pod logs.

Unix sockets live under a short runtime folder, ``/run/prefops-<hash of the state folder>``, so a checkout at any
path works (a socket path is limited to 108 bytes). ``cluster.py`` builds the cluster from this;
``tests/support/node.py`` reads it to find nodes, their pods' processes and their containerd.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.97.0.0/16"
API_PORT, ETCD_PORT, ETCD_PEER_PORT = 36443, 32379, 32380
KUBELET_PORT = 30250  # on each node's own address
MAX_NODES = 9
#: The apiserver's admission plugins beyond its defaults, here and on the operator tests' apiserver
#: (tests/support/kube.py): NodeRestriction (a kubelet edits only its own node and pods), and
#: OwnerReferencesPermissionEnforcement (setting blockOwnerDeletion on an owner reference needs update on the owner's
#: finalizers; the operator sets it on every child, so its RBAC grants that).
ADMISSION_PLUGINS = ("NodeRestriction", "OwnerReferencesPermissionEnforcement")
FIREWALL = "PREFOPS-NODE"
#: Where every Kubernetes component's pod-facing addresses come from: the first node's bridge is the control
#: plane's address (apiserver, DNS); servers the tests start for pods (S3, Prometheus) bind it too.
CONTROL_NODE = 1
#: Host paths a kubelet or containerd uses whatever its configuration says; inside a node's mount namespace each
#: is a folder of that node (under its state folder when it holds data, under the runtime folder otherwise).
PRIVATE_DATA = ("/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/var/lib/cni")
PRIVATE_RUNTIME = ("/run/containerd", "/run/netns")


def runtime_dir(state: Path) -> Path:
    """The short folder for sockets and mount namespaces, one per state folder."""
    digest = hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:8]
    return Path("/run") / f"prefops-{digest}"


@dataclass(frozen=True)
class NodeLayout:
    index: int  # 1-based
    state: Path  # the cluster's state folder
    run: Path  # the cluster's runtime folder

    @property
    def name(self) -> str:
        return f"prefops-node-{self.index}"

    @property
    def bridge(self) -> str:
        return f"prefops{self.index}"

    @property
    def ip(self) -> str:
        return f"10.244.{self.index}.1"

    @property
    def pod_cidr(self) -> str:
        return f"10.244.{self.index}.0/24"

    @property
    def healthz_port(self) -> int:
        return 30248 + 100 * (self.index - 1)

    @property
    def dir(self) -> Path:
        """The node's data: kubelet root, pod logs, CNI configuration and addresses."""
        return self.state / "nodes" / self.name

    @property
    def run_dir(self) -> Path:
        return self.run / self.name

    @property
    def socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def mount_ns(self) -> Path:
        return self.run / f"{self.name}.mnt"

    @property
    def cgroup(self) -> str:
        """The kubelet's cgroup root, in every hierarchy."""
        return f"/{self.name}"

    @property
    def daemons_cgroup(self) -> str:
        """Where the node's kubelet, containerd and containerd's shims run (beside ``kubepods``)."""
        return f"{self.cgroup}/node"

    def private_mounts(self) -> dict[str, Path]:
        """Host path → the node's own folder mounted there in its mount namespace."""
        data = {p: self.dir / "mounts" / p.strip("/").replace("/", "-") for p in PRIVATE_DATA}
        runtime = {p: self.run_dir / p.strip("/").replace("/", "-") for p in PRIVATE_RUNTIME}
        return data | runtime

    def processes(self) -> list[int]:
        """Every process of the node, found by its cgroup: kubelet, containerd, shims and its pods' processes."""
        return sorted({pid for pids in _cgroup_procs(self.cgroup).values() for pid in pids})

    def pod_processes(self) -> dict[str, list[int]]:
        """Pod UID → the processes of that pod's containers running on this node now."""
        found: dict[str, list[int]] = {}
        for path, pids in _cgroup_procs(f"{self.cgroup}/kubepods").items():
            pod = next((part[3:] for part in path.split("/") if part.startswith("pod")), None)
            if pod and pids:
                found.setdefault(pod.replace("_", "-"), []).extend(pids)
        return {uid: sorted(pids) for uid, pids in found.items()}


@dataclass(frozen=True)
class Layout:
    state: Path
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_NODES:
            raise ValueError(f"nodes: must be 1 to {MAX_NODES}, got {self.count}")

    @property
    def run(self) -> Path:
        return runtime_dir(self.state)

    @property
    def nodes(self) -> tuple[NodeLayout, ...]:
        return tuple(NodeLayout(i, self.state, self.run) for i in range(1, self.count + 1))

    @property
    def control_ip(self) -> str:
        return self.nodes[CONTROL_NODE - 1].ip

    @property
    def api_server(self) -> str:
        return f"https://{self.control_ip}:{API_PORT}"

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    def node(self, name: str) -> NodeLayout:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r} in this cluster (its nodes: {', '.join(n.name for n in self.nodes)})")

    def save(self) -> None:
        (self.state / "layout.json").write_text(json.dumps({"nodes": self.count}) + "\n")

    @classmethod
    def load(cls, state: Path) -> Layout | None:
        """The layout of the cluster whose state is in ``state``, or None when none was made there."""
        try:
            return cls(state, int(json.loads((state / "layout.json").read_text())["nodes"]))
        except (OSError, ValueError, KeyError):
            return None


def default_state(root: Path) -> Path:
    return Path(os.environ.get("PREFOPS_CLUSTER_DIR") or root / ".cluster")


def cgroup_base() -> Path:
    """The hierarchy that finds a cgroup's processes: the pids controller's (cgroup v1), else the unified one."""
    v1 = Path("/sys/fs/cgroup/pids")
    return v1 if v1.is_dir() else Path("/sys/fs/cgroup")


def _cgroup_procs(cgroup: str) -> dict[str, list[int]]:
    """cgroup path → its processes, for ``cgroup`` and every cgroup under it (the pids hierarchy)."""
    base = cgroup_base()
    top = base / cgroup.strip("/")
    found: dict[str, list[int]] = {}
    for procs in top.rglob("cgroup.procs") if top.is_dir() else ():
        try:
            pids = [int(line) for line in procs.read_text().split()]
        except OSError:  # removed meanwhile
            continue
        found["/" + str(procs.parent.relative_to(base))] = pids
    return found
