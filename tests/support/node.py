"""The local single-node Kubernetes of ``scripts/cluster.sh`` (``make cluster``) for the end-to-end tests: a real
kubelet, containerd, scheduler and kube-proxy running the project's own images.

:func:`node_cluster` uses the node when it is up already (a contributor's ``make cluster``); otherwise it brings
it up, and at the end takes it down again and checks that the host is as it was before
(``scripts/host_state.py``). Either way ``cluster.sh up`` runs first: it imports images that changed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from .kube import ROOT

NODE_IP = "10.244.0.1"  # the node's bridge: servers the pods talk to bind it
CLUSTER_SH = ROOT / "scripts" / "cluster.sh"
STATE = Path(os.environ.get("PREFOPS_CLUSTER_DIR", ROOT / ".cluster"))


class NodeError(RuntimeError):
    """The node could not be brought up (tests fail, never skip)."""


def _host_state() -> Any:
    spec = importlib.util.spec_from_file_location("host_state", ROOT / "scripts" / "host_state.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cluster(command: str, log: Path, timeout: float) -> None:
    with log.open("ab") as out:
        result = subprocess.run([str(CLUSTER_SH), command], stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise NodeError(f"scripts/cluster.sh {command} failed ({result.returncode}):\n{tail}")


@contextlib.contextmanager
def node_cluster(workdir: Path) -> Iterator[Node]:
    """The node, up and Ready with the current images; taken down afterwards only when started here."""
    started_here = subprocess.run([str(CLUSTER_SH), "status"], capture_output=True).returncode != 0
    host_state = _host_state()
    before = host_state.snapshot(str(STATE)) if started_here else None
    try:
        _cluster("up", workdir / "cluster-up.log", timeout=1800)
        yield Node(STATE / "kubeconfig")
    finally:  # also after a failed start: what it did start goes
        if started_here:
            _cluster("down", workdir / "cluster-down.log", timeout=300)
            changed = host_state.differences(before, host_state.snapshot(str(STATE)))
            assert not changed, "make cluster-down left the host changed:\n" + "\n".join(changed)


@dataclass
class Node:
    kubeconfig: Path

    def kubectl(self, *args: str, namespace: str | None = None, stdin: str | None = None, timeout: float = 120) -> str:
        """Run kubectl as the cluster admin; raise with its stderr when it fails."""
        cmd = ["kubectl", f"--kubeconfig={self.kubeconfig}", *(["-n", namespace] if namespace else []), *args]
        result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, cmd, result.stdout, result.stderr)
        return result.stdout

    def apply(self, objects: list[dict[str, Any]], namespace: str | None = None) -> None:
        self.kubectl("apply", "-f", "-", namespace=namespace, stdin=yaml.safe_dump_all(objects))

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
                    import base64

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


@dataclass(frozen=True)
class PodRecord:
    name: str
    uid: str
    labels: dict[str, str]


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
                        self.created.append(PodRecord(pod.metadata.name, pod.metadata.uid, pod.metadata.labels or {}))
                    if self._stop.is_set():
                        return

    def names(self, prefix: str = "") -> list[str]:
        """Names of the pods created, once per pod created (a name recreated appears again)."""
        return [p.name for p in self.created if p.name.startswith(prefix)]


def pod_logs(node: Node, namespace: str, name: str) -> str:
    """The container log of a pod (``kubectl logs``), or why there is none."""
    try:
        return node.kubectl("logs", name, namespace=namespace)
    except subprocess.CalledProcessError as e:
        return f"(no log: {e.stderr.strip()})"


def pod_summary(node: Node, namespace: str) -> str:
    """One line per pod: name, phase, and the container's state, for failure messages."""
    pods = json.loads(node.kubectl("get", "pods", "-o", "json", namespace=namespace))["items"]
    lines = []
    for p in pods:
        states = [s.get("state") for s in p["status"].get("containerStatuses") or []]
        lines.append(f"{p['metadata']['name']} {p['status'].get('phase')} {json.dumps(states)[:300]}")
    return "\n".join(lines)
