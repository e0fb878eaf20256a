"""Build and drive PreferenceTrainingJobs in tests: manifests with sensible cluster defaults, and a small client
that creates, reads, patches and waits on them through the real apiserver."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from .kube import wait_for

GROUP, VERSION, PLURAL = "prefops.dev", "v1alpha1", "preferencetrainingjobs"


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in: nested mappings merge, other values replace, ``None`` removes the key.
    Neither argument is changed. The one merge of every test helper that builds manifests (here, and the trainer
    tests' ``trainer_jobs``)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = copy.deepcopy(value)
    return out


def job_manifest(name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """A valid cluster job (DPO, s3:// storage, one node with one GPU) with ``spec`` merged over it."""
    base = {
        "model": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct"},
        "dataset": {"source": "s3://prefs/ultrafeedback.jsonl"},
        "algorithm": {"name": "dpo"},
        "output": {"uri": f"s3://models/{name}"},
        "storage": {"uri": "s3://work/prefops", "credentialsSecret": "s3-creds"},
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PreferenceTrainingJob",
        "metadata": {"name": name},
        "spec": deep_merge(base, spec or {}),
    }


class CustomObjects:
    """Custom objects of one kind in one namespace, as an admin: what jobs and sweeps have in common."""

    plural, kind, word = PLURAL, "PreferenceTrainingJob", "job"

    def __init__(self, custom: Any, core: Any, namespace: str) -> None:
        self.custom, self.core, self.namespace = custom, core, namespace

    def create(self, manifest: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        kwargs = {"dry_run": "All"} if dry_run else {}
        return dict(
            self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, self.plural, manifest, **kwargs)
        )

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, self.plural, name))

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, self.plural, name, {"spec": spec})

    def delete(self, name: str, propagation: str | None = None) -> None:
        """Delete the object; ``propagation="Orphan"`` leaves its children behind, without their owner reference."""
        body = {"propagationPolicy": propagation} if propagation else None
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, self.plural, name, body=body)

    def exists(self, name: str) -> bool:
        import kubernetes

        try:
            self.get(name)
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    def wait_phase(self, name: str, phase: str, timeout: float = 30) -> dict[str, Any]:
        """Wait until the object's status.phase is ``phase``; return the status."""
        return wait_for(
            lambda: (s := self.status(name)).get("phase") == phase and s,
            timeout,
            f"{self.word} {name} to reach {phase} (now {self.status(name).get('phase')})",
        )

    def wait_status(self, name: str, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30) -> Any:
        return wait_for(lambda: (s := self.status(name)) and check(s) and s, timeout, f"{self.word} {name}: {what}")

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        """The status condition of ``type_``, if there is one."""
        return next((c for c in self.status(name).get("conditions") or [] if c["type"] == type_), None)

    def events(self, name: str) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the Events recorded on the object, oldest first."""
        items = self.core.list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}").items
        items = [e for e in items if e.involved_object.kind == self.kind]
        return [(e.type, e.reason, e.message) for e in sorted(items, key=lambda e: int(e.metadata.resource_version))]

    def wait_event(self, name: str, type_: str, reason: str, timeout: float = 30) -> list[tuple[str, str, str]]:
        """The object's Events once one of ``type_`` and ``reason`` is among them: the operator posts an Event after
        the status write it accompanies, so a test that saw the status waits for the Event rather than read at once."""
        seen = lambda: (found := self.events(name)) and any(e[:2] == (type_, reason) for e in found) and found  # noqa: E731
        return wait_for(seen, timeout, f"a {type_} Event {reason} on {self.word} {name}")


class Jobs(CustomObjects):
    """PreferenceTrainingJobs of one namespace, as an admin."""

    def pods(self, name: str, phase: str | None = None) -> dict[str, Any]:
        """The job's pods by name (V1Pod objects), optionally of one phase."""
        selector = f"prefops.dev/job-name={name}" + (f",prefops.dev/phase={phase}" if phase else "")
        return {
            p.metadata.name: p for p in self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        }

    def wait_pods(self, name: str, phase: str, count: int, attempt: int = 1, timeout: float = 30) -> dict[str, Any]:
        """Wait until exactly ``count`` live pods of ``phase`` and ``attempt`` exist (and no others of that phase)."""

        def ready() -> dict[str, Any] | None:
            pods = {n: p for n, p in self.pods(name, phase).items() if p.metadata.deletion_timestamp is None}
            attempts = {p.metadata.labels.get("prefops.dev/attempt") for p in pods.values()}
            return pods if len(pods) == count and attempts == {str(attempt)} else None

        return wait_for(ready, timeout, f"{count} {phase} pods of {name}, attempt {attempt}")
