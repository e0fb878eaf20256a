"""A started job's spec is frozen, but for its lifecycle fields. Pure.

The trainer reads the spec the job started with (its ConfigMap is written once), so a later edit of any other
field would be half-applied: pods, group sizes and ``status.outputURI`` would follow the edit while the trainer
does not. The operator refuses such edits instead: it goes on with the spec the job started with (the
ConfigMap's), takes only :data:`MUTABLE` fields from the current spec, and names every other changed field in the
``SpecChangeRefused`` condition until the edit is reverted.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .known_fields import DEFAULTS
from .rules.lifecycle import LIFECYCLE

#: spec fields that may change while a job runs (dotted, under spec): pausing and the limits and deadlines
MUTABLE = (*LIFECYCLE, "training.progressDeadlineSeconds")


def spec_changes(started: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[str, ...]:
    """``spec.<path>`` of every field that differs between the started and the current spec, besides
    :data:`MUTABLE`. A field the started spec lacks and the current one holds at its CRD default is no change (an
    upgraded CRD defaulted it)."""
    return tuple(f"spec.{path}" for path in _diff(started, current, ""))


def _diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str) -> list[str]:
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        if path in MUTABLE:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping | None) and isinstance(b, Mapping | None) and (a, b) != (None, None):
            out += _diff(a or {}, b or {}, f"{path}.")  # a block on one side only: compare its fields
        elif a is None and key not in old and DEFAULTS.get(path, object()) == b:
            continue
        elif a != b:
            out.append(path)
    return out


def effective_spec(started: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """The spec the job goes on with: the started one, with the :data:`MUTABLE` fields of the current one."""
    out = copy.deepcopy(dict(started))
    for path in MUTABLE:
        *parents, leaf = path.split(".")
        source: Any = current
        target = out
        for part in parents:
            source = source.get(part) if isinstance(source, Mapping) else None
            target = target.setdefault(part, {}) if isinstance(target.get(part, {}), dict) else {}
        if isinstance(source, Mapping) and leaf in source:
            target[leaf] = copy.deepcopy(source[leaf])
        else:
            target.pop(leaf, None)
    return out
