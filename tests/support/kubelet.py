"""A kubelet stand-in: there is no kubelet in the test cluster, so tests move pods through their lifecycle by
patching ``pods/status`` exactly as a kubelet would (phase, container states, exit codes, termination messages,
pod IP). Everything goes through the real apiserver."""

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

    def run(self, namespace: str, name: str) -> None:
        """Scheduled, image pulled, container started."""
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
