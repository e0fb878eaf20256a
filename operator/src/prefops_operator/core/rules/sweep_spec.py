# Generated from trainer/src/prefops_trainer/core/rules/sweep_spec.py
# by scripts/gen_shared_copies.py (a test checks it is current): do not edit.
"""A ``PreferenceTrainingSweep``'s spec parsed into frozen objects (docs/contract.md §9). Pure.

The CRD (crds/prefops.dev_preferencetrainingsweeps.yaml) checks the shape on a cluster; local mode has no CRD, so
this parser checks every field it reads either way and raises :class:`.errors.InvalidSpec` naming the field path.
The template travels as a mapping: each trial's job spec is built from it (:mod:`.trials`) and parsed by the side's
own job parser like any job's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidSpec

SWEEP_KIND = "PreferenceTrainingSweep"
GOALS = ("maximize", "minimize")
#: Trials one sweep may have: each is a PreferenceTrainingJob and a row of the sweep's status.
MAX_TRIALS = 256
#: A parameter path: camelCase field names of the job spec joined by dots, e.g. ``algorithm.beta``.
PATH = re.compile(r"^[a-zA-Z][a-zA-Z0-9]*(\.[a-zA-Z][a-zA-Z0-9]*)*$")
#: Fields the sweep sets on every trial itself: a parameter may not name them (or anything inside them).
RESERVED_PATHS = ("output.uri", "suspend", "ttlSecondsAfterFinished")

Overrides = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Parameter:
    """One axis of the grid: ``spec.template`` at ``path`` takes each of ``values`` in turn."""

    path: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Objective:
    """The evaluation metric that ranks the trials, and whether higher (``maximize``) or lower is better."""

    metric: str
    goal: str

    def better(self, value: float, than: float) -> bool:
        return value > than if self.goal == "maximize" else value < than


@dataclass(frozen=True)
class SweepSpec:
    """``parameters`` (a grid: every combination) or ``trials`` (explicit ``path → value`` overrides), never both."""

    template: Mapping[str, Any]
    parameters: tuple[Parameter, ...]
    trials: tuple[Overrides, ...] | None
    objective: Objective
    parallelism: int
    suspend: bool


def parse_sweep_spec(spec: Any) -> SweepSpec:
    """Parse a sweep's ``spec``; :class:`InvalidSpec` names the field at fault."""
    if not isinstance(spec, Mapping):
        raise InvalidSpec(f"spec: must be an object, got {type(spec).__name__}")
    template = spec.get("template")
    if not isinstance(template, Mapping):
        raise InvalidSpec("spec.template: must be a PreferenceTrainingJob spec (an object)")
    has_grid, has_list = spec.get("parameters") is not None, spec.get("trials") is not None
    if has_grid == has_list:
        raise InvalidSpec("spec: set exactly one of parameters (a grid) and trials (an explicit list)")
    return SweepSpec(
        template=dict(template),
        parameters=_parameters(spec.get("parameters")) if has_grid else (),
        trials=_trials(spec.get("trials")) if has_list else None,
        objective=_objective(spec.get("objective")),
        parallelism=_positive_int(spec.get("parallelism", 1), "spec.parallelism"),
        suspend=_bool(spec.get("suspend", False), "spec.suspend"),
    )


def _parameters(value: Any) -> tuple[Parameter, ...]:
    items = _list(value, "spec.parameters")
    out = []
    for i, item in enumerate(items):
        where = f"spec.parameters[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidSpec(f"{where}: must be an object with path and values")
        values = _list(item.get("values"), f"{where}.values")
        out.append(Parameter(check_path(item.get("path"), f"{where}.path"), tuple(values)))
    return tuple(out)


def _trials(value: Any) -> tuple[Overrides, ...]:
    items = _list(value, "spec.trials")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or not item:
            raise InvalidSpec(f"spec.trials[{i}]: must be a non-empty object of path: value overrides")
        out.append(tuple((check_path(path, f"spec.trials[{i}]"), v) for path, v in item.items()))
    return tuple(out)


def _objective(value: Any) -> Objective:
    if not isinstance(value, Mapping):
        raise InvalidSpec("spec.objective: required: {metric: <an evaluation metric>, goal: maximize | minimize}")
    metric, goal = value.get("metric"), value.get("goal")
    if not isinstance(metric, str) or not metric:
        raise InvalidSpec(f"spec.objective.metric: must be an evaluation metric name, got {metric!r}")
    if goal not in GOALS:
        raise InvalidSpec(f"spec.objective.goal: must be maximize or minimize, got {goal!r}")
    return Objective(metric, str(goal))


def check_path(path: Any, where: str) -> str:
    """``path`` when it is a dotted path of field names outside the reserved ones; else :class:`InvalidSpec`."""
    if not isinstance(path, str) or not PATH.match(path):
        raise InvalidSpec(f"{where}: {path!r} is not a dotted path of job spec fields, e.g. algorithm.beta")
    reserved = next((r for r in RESERVED_PATHS if path == r or path.startswith(r + ".")), None)
    if reserved is not None:
        raise InvalidSpec(f"{where}: {path!r} is set by the sweep for every trial ({reserved}); it cannot be swept")
    return path


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise InvalidSpec(f"{where}: must be a non-empty list")
    return value


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidSpec(f"{where}: must be an integer >= 1, got {value!r}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidSpec(f"{where}: must be true or false, got {value!r}")
    return value


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool: what an objective value may be."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
