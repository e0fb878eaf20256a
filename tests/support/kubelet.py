"""A kubelet stand-in: there is no kubelet in the test cluster, so tests move pods through their lifecycle by
patching ``pods/status`` exactly as a kubelet would (phase, container states, exit codes, termination messages,
pod IP), bind pods to nodes as a scheduler would, and keep :class:`Nodes` as a kubelet and the node lifecycle
controller would (Ready, taints, cordons). Everything goes through the real apiserver.

A pod bound to a node is deleted gracefully, as on a real cluster: it stays ``Terminating`` (its
``deletionTimestamp`` set) until its kubelet confirms the kill (:meth:`Kubelet.gone`), which a dead node never does.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

CONTAINER = "trainer"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kubelet:
    def __init__(self, core: Any, ip: str = "127.0.0.1") -> None:
        self.core, self.ip = core, ip

    def _patch(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.core.patch_namespaced_pod_status(name, namespace, {"status": status})

    def _container(self, namespace: str, name: str, state: dict[str, Any], ready: bool) -> dict[str, Any]:
        image = self.core.read_namespaced_pod(name, namespace).spec.containers[0].image
        return {
            "name": CONTAINER,
            "image": image,
            "imageID": "",
            "ready": ready,
            "restartCount": 0,
            "started": ready,
            "state": state,
        }

    def bind(self, namespace: str, name: str, node: str) -> None:
        """Schedule the pod onto ``node`` (the pods/binding subresource, as the scheduler does)."""
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}  # fmt: skip
        self.core.create_namespaced_pod_binding(name, namespace, body, _preload_content=False)

    def run(self, namespace: str, name: str, node: str | None = None) -> None:
        """Scheduled (onto ``node`` when given), image pulled, container started."""
        if node is not None:
            self.bind(namespace, name, node)
        state = {"running": {"startedAt": _now()}}
        self._patch(
            namespace,
            name,
            {
                "phase": "Running",
                "podIP": self.ip,
                "hostIP": self.ip,
                "startTime": _now(),
                "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
                "containerStatuses": [self._container(namespace, name, state, True)],
            },
        )

    def exit(self, namespace: str, name: str, code: int, reason: str | None = None, message: str = "") -> None:
        """The trainer exits with ``code`` (0: Succeeded, else Failed), leaving ``message`` in the termination log."""
        terminated = {
            "exitCode": code,
            "reason": reason or ("Completed" if code == 0 else "Error"),
            "startedAt": _now(),
            "finishedAt": _now(),
        }
        if message:
            terminated["message"] = message
        self._patch(
            namespace,
            name,
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "podIP": self.ip,
                "containerStatuses": [self._container(namespace, name, {"terminated": terminated}, False)],
            },
        )

    def succeed(self, namespace: str, name: str, message: str = "") -> None:
        self.exit(namespace, name, 0, message=message)

    def run_all(self, namespace: str, pods: Iterable[str], exit_code: int | None = None) -> None:
        """Start every pod (by name, in name order) and, with ``exit_code``, let each exit with it."""
        for name in sorted(pods):
            self.run(namespace, name)
            if exit_code is not None:
                self.exit(namespace, name, exit_code)

    def not_ready(self, namespace: str, name: str, since: str) -> None:
        """What the node lifecycle controller does to the pods of a node it lost: Ready turns False."""
        conditions = [{"type": "PodScheduled", "status": "True"},
                      {"type": "Ready", "status": "False", "lastTransitionTime": since}]  # fmt: skip
        self._patch(namespace, name, {"conditions": conditions})

    def disruption_target(self, namespace: str, name: str, reason: str) -> None:
        """The DisruptionTarget condition Kubernetes 1.26+ writes before it takes a pod away."""
        conditions = [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"},
                      {"type": "DisruptionTarget", "status": "True", "reason": reason}]  # fmt: skip
        self._patch(namespace, name, {"conditions": conditions})

    def evicted(self, namespace: str, name: str, message: str) -> None:
        """The kubelet evicts the pod (node pressure, or the pod's own storage limit): Failed, reason Evicted."""
        terminated = {"exitCode": 137, "reason": "Error", "startedAt": _now(), "finishedAt": _now()}
        self._patch(
            namespace,
            name,
            {
                "phase": "Failed",
                "reason": "Evicted",
                "message": message,
                "containerStatuses": [self._container(namespace, name, {"terminated": terminated}, False)],
            },
        )

    def unschedulable(self, namespace: str, name: str, message: str) -> None:
        """The scheduler cannot place the pod: PodScheduled False, reason Unschedulable."""
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
        self._patch(namespace, name, {"phase": "Pending", "conditions": [condition]})

    def gone(self, namespace: str, name: str) -> None:
        """The kubelet confirms a deleted pod is stopped: the pod object goes."""
        self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)

    def image_pull_backoff(self, namespace: str, name: str) -> None:
        """Scheduled, but the image cannot be pulled: the pod stays Pending."""
        state = {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
        self._patch(
            namespace,
            name,
            {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [self._container(namespace, name, state, False)],
            },
        )


class Nodes:
    """Node objects in the test's control plane, kept as a kubelet (Ready heartbeats) and the node lifecycle
    controller (Ready Unknown, the unreachable taint) would keep them; ``kubectl cordon`` too. Names are the
    caller's; :meth:`delete_all` removes the ones made here."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self.made: list[str] = []

    def create(self, name: str) -> str:
        self.core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
        self.made.append(name)
        self.ready(name, "True", _now())
        return name

    def ready(self, name: str, status: str, since: str, reason: str = "") -> None:
        """Set the node's Ready condition (``Unknown`` with reason ``NodeStatusUnknown`` is a silent kubelet)."""
        reason = reason or {"True": "KubeletReady", "Unknown": "NodeStatusUnknown"}.get(status, "KubeletNotReady")
        condition = {"type": "Ready", "status": status, "reason": reason, "lastTransitionTime": since,
                     "lastHeartbeatTime": since}  # fmt: skip
        self.core.patch_node_status(name, {"status": {"conditions": [condition]}})

    def taint(self, name: str, key: str, since: str, effect: str = "NoExecute") -> None:
        self.core.patch_node(name, {"spec": {"taints": [{"key": key, "effect": effect, "timeAdded": since}]}})

    def cordon(self, name: str) -> None:
        self.core.patch_node(name, {"spec": {"unschedulable": True}})

    def delete_all(self) -> None:
        for name in self.made:
            self.core.delete_node(name)
        self.made.clear()
