"""The local test cluster of ``scripts/cluster/cluster.sh`` (``make cluster``) for the end-to-end tests: real
kubelets, containerds, scheduler and kube-proxy running the project's own images, on two nodes by default
(``PREFOPS_E2E_NODES``).

:func:`node_cluster` uses the cluster when it is up already (a contributor's ``make cluster NODES=2``); otherwise
it brings it up, and at the end takes it down again and checks that the host is as it was before
(``scripts/cluster/host_state.py``), with foreign look-alikes of what a node makes planted first, which ``down``
must leave alone. Either way ``cluster.sh up`` runs first: it imports images that changed and restores dead nodes.

:class:`Cluster` is the API of the tests, disruptions included::

    cluster.nodes                               ('prefops-node-1', 'prefops-node-2')
    cluster.pod_node(namespace, pod)            the node a pod is bound to (spec.nodeName), None when unscheduled
    cluster.kill_node(name, kubelet_only=False) the node dies (cluster.sh kill-node): nothing leaves the API
    cluster.restore_node(name)                  it comes back and is Ready (cluster.sh restore-node)
    with cluster.node_down(name): ...           killed inside, restored (and Ready) after, whatever happens inside
    cluster.wait_node_not_ready(name, timeout)  until the node controller marks it (40 s after its last report)
    cluster.wait_node_ready(name, timeout)
    cluster.pod_processes(name)                 pod UID -> PIDs of its containers running on that node now
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from .kube import ROOT, wait_for
from .scripts import load_script

CLUSTER_SH = ROOT / "scripts" / "cluster" / "cluster.sh"
E2E_NODES = int(os.environ.get("PREFOPS_E2E_NODES") or 2)


class NodeError(RuntimeError):
    """The cluster could not be brought up, or a node not killed or restored (tests fail, never skip)."""


def _script(name: str) -> ModuleType:
    """A stdlib-only module of scripts/cluster/."""
    return load_script(f"cluster/{name}")


layout = _script("layout")
STATE = layout.default_state(ROOT)
#: the control plane's address, the first node's bridge: servers the pods talk to (S3, Prometheus) bind it
NODE_IP = layout.Layout(STATE, 1).control_ip


def _cluster(*args: str, log: Path, timeout: float) -> None:
    with log.open("ab") as out:
        result = subprocess.run([str(CLUSTER_SH), *args], stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise NodeError(f"scripts/cluster/cluster.sh {' '.join(args)} failed ({result.returncode}):\n{tail}")


@contextlib.contextmanager
def node_cluster(workdir: Path, nodes: int = E2E_NODES) -> Iterator[Cluster]:
    """The cluster, up with ``nodes`` Ready nodes and the current images; taken down afterwards only when started
    here, and then the host must be as it was, foreign look-alikes of the cluster's objects included."""
    started_here = subprocess.run([str(CLUSTER_SH), "status"], capture_output=True).returncode != 0
    host_state = _script("host_state")
    planted = host_state.plant_foreign() if started_here else []
    before = host_state.snapshot(str(STATE)) if started_here else None
    try:
        _cluster("up", "--nodes", str(nodes), log=workdir / "cluster-up.log", timeout=1800)
        yield Cluster(STATE / "kubeconfig", layout.Layout.load(STATE), workdir)
    finally:  # also after a failed start: what it did start goes
        if started_here:
            try:
                _cluster("down", log=workdir / "cluster-down.log", timeout=300)
                changed = host_state.differences(before, host_state.snapshot(str(STATE)))
            finally:
                host_state.remove_foreign(planted)
            assert not changed, "make cluster-down left the host changed:\n" + "\n".join(changed)


@dataclass
class Cluster:
    kubeconfig: Path
    layout: Any  # scripts/cluster/layout.py Layout
    workdir: Path

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.layout.nodes)

    def kubectl(self, *args: str, namespace: str | None = None, stdin: str | None = None, timeout: float = 120) -> str:
        """Run kubectl as the cluster admin; raise with its stderr when it fails."""
        cmd = ["kubectl", f"--kubeconfig={self.kubeconfig}", *(["-n", namespace] if namespace else []), *args]
        result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, cmd, result.stdout, result.stderr)
        return result.stdout

    def apply(self, objects: list[dict[str, Any]], namespace: str | None = None) -> None:
        self.kubectl("apply", "-f", "-", namespace=namespace, stdin=yaml.safe_dump_all(objects))

    # -- nodes -----------------------------------------------------------------------------------------------------

    def pod_node(self, namespace: str, pod: str) -> str | None:
        """The node the pod is bound to (``spec.nodeName``); None while it is not scheduled."""
        return self.core().read_namespaced_pod(pod, namespace).spec.node_name

    def node_ready(self, name: str) -> str:
        """The status of the node's Ready condition: ``True``, ``False`` or ``Unknown`` (its kubelet went quiet)."""
        conditions = self.core().read_node(name).status.conditions or []
        return next((c.status for c in conditions if c.type == "Ready"), "Unknown")

    def wait_node_ready(self, name: str, timeout: float = 120) -> float:
        """Wait until the node is Ready; the seconds it took."""
        start = time.monotonic()
        wait_for(lambda: self.node_ready(name) == "True", timeout, f"node {name} Ready", interval=0.5)
        return time.monotonic() - start

    def wait_node_not_ready(self, name: str, timeout: float = 120) -> float:
        """Wait until the node controller marks the node not Ready (40 s after its kubelet's last report on this
        cluster); the seconds it took."""
        start = time.monotonic()
        wait_for(lambda: self.node_ready(name) != "True", timeout, f"node {name} not Ready", interval=0.5)
        return time.monotonic() - start

    def kill_node(self, name: str, kubelet_only: bool = False) -> None:
        """The node dies: its kubelet, containerd, shims and every process of its pods are SIGKILLed (with
        ``kubelet_only``, the kubelet alone: its containers go on, as when a kubelet crashes or a node is cut
        off). Nothing is removed from the API."""
        args = ("kill-node", name, *(["--kubelet-only"] if kubelet_only else []))
        _cluster(*args, log=self.workdir / "cluster-nodes.log", timeout=60)

    def restore_node(self, name: str) -> None:
        """Start what :meth:`kill_node` killed; returns once the node's kubelet reported it Ready again."""
        _cluster("restore-node", name, log=self.workdir / "cluster-nodes.log", timeout=300)

    @contextlib.contextmanager
    def node_down(self, name: str, kubelet_only: bool = False) -> Iterator[None]:
        """The node killed for the block, restored and Ready after it, whatever happens inside."""
        self.kill_node(name, kubelet_only)
        try:
            yield
        finally:
            self.restore_node(name)

    def pod_range(self, name: str) -> str:
        """The addresses node ``name`` gives its pods (its CNI bridge's range), e.g. ``10.244.2.0/24``."""
        return str(self.layout.node(name).pod_cidr)

    def pod_processes(self, name: str) -> dict[str, list[int]]:
        """Pod UID → the PIDs of that pod's containers running on node ``name`` now (from its cgroups)."""
        return dict(self.layout.node(name).pod_processes())

    def node_processes(self, name: str) -> list[int]:
        """Every process of node ``name``: kubelet, containerd, shims and its pods' processes."""
        return list(self.layout.node(name).processes())

    # -- API clients -----------------------------------------------------------------------------------------------

    @cached_property
    def api(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(str(self.kubeconfig), persist_config=False)

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    def apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api)

    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def service_account_token(self, namespace: str, name: str, timeout: float = 60) -> str:
        """The token of a ServiceAccount (its token Secret, made by the controller-manager as 1.20 does)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            account = self.core().read_namespaced_service_account(name, namespace)
            for ref in account.secrets or []:
                secret = self.core().read_namespaced_secret(ref.name, namespace)
                if secret.data and "token" in secret.data:
                    return base64.b64decode(secret.data["token"]).decode()
            time.sleep(0.5)
        raise AssertionError(f"no token for ServiceAccount {namespace}/{name} within {timeout}s")

    def core_as(self, token: str) -> Any:
        """A CoreV1Api that authenticates with ``token`` (a ServiceAccount's) instead of as the admin."""
        from kubernetes import client

        config = client.Configuration(host=self.server, api_key={"authorization": f"Bearer {token}"})
        config.ssl_ca_cert = str(self.ca_file)
        return client.CoreV1Api(client.ApiClient(config))

    @property
    def ca_file(self) -> Path:
        return STATE / "pki" / "ca.crt"

    @property
    def server(self) -> str:
        return str(yaml.safe_load(self.kubeconfig.read_text())["clusters"][0]["cluster"]["server"])


#: The name of :class:`Cluster` before the cluster had several nodes.
Node = Cluster


@dataclass(frozen=True)
class PodRecord:
    name: str
    uid: str
    labels: dict[str, str]
    created: str  # metadata.creationTimestamp, as the apiserver wrote it (whole seconds)


@dataclass
class PodWatch:
    """Every pod created in a namespace, in order, from a watch on the API (a thread)."""

    core: Any
    namespace: str
    created: list[PodRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="podwatch")

    def __enter__(self) -> PodWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _watch(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a watch may time out or break: list and watch again
                for event in watch.Watch().stream(
                    self.core.list_namespaced_pod, self.namespace, timeout_seconds=10, _request_timeout=20
                ):
                    pod = event["object"]
                    if pod.metadata.uid not in self._seen:
                        self._seen.add(pod.metadata.uid)
                        created = pod.metadata.creation_timestamp.isoformat()
                        record = PodRecord(pod.metadata.name, pod.metadata.uid, pod.metadata.labels or {}, created)
                        self.created.append(record)
                    if self._stop.is_set():
                        return

    def names(self, prefix: str = "") -> list[str]:
        """Names of the pods created, once per pod created (a name recreated appears again)."""
        return [p.name for p in self.created if p.name.startswith(prefix)]

    def first(self, prefix: str) -> PodRecord:
        """The first pod created whose name starts with ``prefix``."""
        return next(p for p in self.created if p.name.startswith(prefix))


def pod_logs(node: Cluster, namespace: str, name: str) -> str:
    """The container log of a pod (``kubectl logs``), or why there is none."""
    try:
        return node.kubectl("logs", name, namespace=namespace)
    except subprocess.CalledProcessError as e:
        return f"(no log: {e.stderr.strip()})"


def pod_summary(node: Cluster, namespace: str) -> str:
    """One line per pod: name, node, phase, and the container's state, for failure messages."""
    pods = json.loads(node.kubectl("get", "pods", "-o", "json", namespace=namespace))["items"]
    lines = []
    for p in pods:
        states = [s.get("state") for s in p["status"].get("containerStatuses") or []]
        where = p["spec"].get("nodeName") or "-"
        lines.append(f"{p['metadata']['name']} {where} {p['status'].get('phase')} {json.dumps(states)[:300]}")
    return "\n".join(lines)
