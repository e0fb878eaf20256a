"""Build and drive PreferenceTrainingSweeps in tests: manifests over the cluster job of ``support.jobs``, and a small
client that creates, reads, patches and waits on them through the real apiserver."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from .jobs import GROUP, VERSION, deep_merge, job_manifest
from .kube import wait_for

PLURAL = "preferencetrainingsweeps"


def sweep_manifest(name: str, spec: dict[str, Any] | None = None, template: dict[str, Any] | None = None) -> dict:
    """A valid sweep over beta of the cluster DPO job (with an eval split); ``spec`` replaces top-level fields,
    ``template`` merges over the job spec."""
    job = job_manifest(name, deep_merge({"dataset": {"evalSplit": "test"}}, template or {}))["spec"]
    base = {
        "template": job,
        "parameters": [{"path": "algorithm.beta", "values": [0.05, 0.1, 0.3]}],
        "objective": {"metric": "rewards/accuracies", "goal": "maximize"},
        "parallelism": 2,
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PreferenceTrainingSweep",
        "metadata": {"name": name},
        "spec": {**base, **copy.deepcopy(spec or {})},
    }


class Sweeps:
    """PreferenceTrainingSweeps of one namespace, as an admin."""

    def __init__(self, custom: Any, core: Any, namespace: str) -> None:
        self.custom, self.core, self.namespace = custom, core, namespace

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return dict(self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, manifest))

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name))

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec})

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def wait_phase(self, name: str, phase: str, timeout: float = 30) -> dict[str, Any]:
        return wait_for(
            lambda: (s := self.status(name)).get("phase") == phase and s,
            timeout,
            f"sweep {name} to reach {phase} (now {self.status(name).get('phase')})",
        )

    def wait_status(self, name: str, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30) -> Any:
        return wait_for(lambda: (s := self.status(name)) and check(s) and s, timeout, f"sweep {name}: {what}")

    def events(self, name: str) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the Events recorded on the sweep, oldest first."""
        items = self.core.list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}").items
        items = [e for e in items if e.involved_object.kind == "PreferenceTrainingSweep"]
        return [(e.type, e.reason, e.message) for e in sorted(items, key=lambda e: int(e.metadata.resource_version))]
