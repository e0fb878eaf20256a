"""A ``PreferenceTrainingSweep`` as the operator sees it: parsed once, at the edge, into frozen objects. Pure.

The CRD (crds/prefops.dev_preferencetrainingsweeps.yaml) has already checked the shape and applied defaults, the
job schema included (``spec.template`` is the PreferenceTrainingJob spec). The spec's parser is shared with the
trainer's local sweeps (:mod:`.rules.sweep_spec`): it checks every field it reads and raises :class:`InvalidSpec`
naming the field path. This module adds the object's metadata (its creator, as the operator's webhook recorded
it) and what the operator keeps in memory of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .creators import CREATOR_ANNOTATION
from .rules.errors import InvalidSpec as InvalidSpec
from .rules.sweep_spec import SWEEP_KIND as SWEEP_KIND
from .rules.sweep_spec import SweepSpec, parse_sweep_spec
from .spec import JobMeta, parse_meta


@dataclass(frozen=True)
class Sweep:
    meta: JobMeta
    spec: SweepSpec
    creator_record: str | None = None  # who created it, as the operator's webhook recorded (core.creators)

    @property
    def key(self) -> tuple[str, str]:
        return (self.meta.namespace, self.meta.name)


_KEPT_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "creationTimestamp", "deletionTimestamp")


def slim_sweep(body: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a sweep object the operator reads: what it keeps in memory per sweep."""
    meta = body.get("metadata") or {}
    kept = {k: meta[k] for k in _KEPT_METADATA if k in meta}
    creator = (meta.get("annotations") or {}).get(CREATOR_ANNOTATION)
    if creator is not None:
        kept["annotations"] = {CREATOR_ANNOTATION: creator}
    return {
        "metadata": kept,
        "spec": body.get("spec"),
        "status": body.get("status"),
    }


def parse_sweep(body: Mapping[str, Any]) -> Sweep:
    """Parse a sweep object (as served by the apiserver) into a :class:`Sweep`; raise :class:`InvalidSpec`."""
    meta = body.get("metadata") or {}
    record = (meta.get("annotations") or {}).get(CREATOR_ANNOTATION)
    return Sweep(parse_meta(meta), parse_sweep_spec(body.get("spec")), record if isinstance(record, str) else None)
