"""Build and drive PreferenceTrainingSweeps in tests: manifests over the cluster job of ``support.jobs``, and a small
client that creates, reads, patches and waits on them through the real apiserver."""

from __future__ import annotations

import copy
from typing import Any

from .jobs import GROUP, VERSION, CustomObjects, deep_merge, job_manifest

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


class Sweeps(CustomObjects):
    """PreferenceTrainingSweeps of one namespace, as an admin."""

    plural, kind, word = PLURAL, "PreferenceTrainingSweep", "sweep"
