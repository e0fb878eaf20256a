"""A ``PreferenceTrainingSweep`` as local mode runs it (docs/contract.md §9): parsed once into frozen objects, expanded
into trials, each trial's job built from the template and checked, the trials ranked. Pure.

The operator does the same on a cluster (``prefops_operator.core.sweep_spec``, ``sweep_trials``, ``sweep_machine``);
the two share no code, so ``tests/contract`` holds them against each other on the same sweep documents:

- **Expansion.** ``parameters`` is a grid, expanded like nested loops in the order written (the last parameter varies
  fastest); ``trials`` is an explicit list of ``path: value`` overrides, in order. At most :data:`MAX_TRIALS`.
- **Names.** Trial ``i`` is the job ``<sweep>-<i>``; a name over 63 characters keeps a prefix of the sweep's name and
  8 hex digits of its sha256 (:func:`child_name`).
- **Overrides.** A path is camelCase job-spec field names joined by dots; its value replaces what the template holds
  there (objects and lists whole), creating missing objects on the way. The sweep sets ``output.uri``
  (``<template output.uri>/<trial>``), ``suspend`` and drops ``ttlSecondsAfterFinished``; none of them can be swept.
- **Ranking.** A trial's value is its final evaluation's objective metric; the best is the succeeded trial with the
  highest (``maximize``) or lowest value, the earlier one on a tie; failed trials never win.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from .algorithms import ALGORITHMS
from .errors import SpecError
from .spec import KIND, Job, check_semantics, parse_structure
from .userinfo import redact

SWEEP_KIND = "PreferenceTrainingSweep"
API_VERSION = "prefops.dev/v1alpha1"
GOALS = ("maximize", "minimize")
#: Trials one sweep may have.
MAX_TRIALS = 256
MAX_NAME = 63
#: A parameter path: camelCase field names of the job spec joined by dots, e.g. ``algorithm.beta``.
PATH = re.compile(r"^[a-zA-Z][a-zA-Z0-9]*(\.[a-zA-Z][a-zA-Z0-9]*)*$")
#: Fields the sweep sets on every trial itself: a parameter may not name them (or anything inside them).
RESERVED_PATHS = ("output.uri", "suspend", "ttlSecondsAfterFinished")
_FIELD = re.compile(r"\bspec\.[A-Za-z0-9_.\[\]]+")


@dataclass(frozen=True)
class Objective:
    """The evaluation metric that ranks the trials, and whether higher (``maximize``) or lower is better."""

    metric: str
    goal: str

    def better(self, value: float, than: float) -> bool:
        return value > than if self.goal == "maximize" else value < than


@dataclass(frozen=True)
class Trial:
    """One point of the sweep; ``origins`` says where each override is written in the sweep (for messages)."""

    index: int
    name: str
    overrides: tuple[tuple[str, Any], ...]
    origins: tuple[str, ...] = ()

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.overrides)

    def describe(self) -> str:
        """``algorithm.beta=0.1, algorithm.lossType=["ipo"]``."""
        return redact(", ".join(f"{path}={json.dumps(value, separators=(',', ':'))}" for path, value in self.overrides))


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep: ``template`` is a job spec (as written); ``trials`` its expansion, in order."""

    name: str
    namespace: str
    template: Mapping[str, Any]
    trials: tuple[Trial, ...]
    objective: Objective
    parallelism: int
    suspend: bool


def child_name(sweep: str, suffix: str) -> str:
    """``<sweep>-<suffix>``, at most 63 characters, unique per (sweep, suffix): the operator's naming."""
    name = f"{sweep}-{suffix}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(sweep.encode()).hexdigest()[:8]
    prefix = sweep[: MAX_NAME - len(suffix) - len(digest) - 2].rstrip("-")
    return f"{prefix}-{digest}-{suffix}"


# -- parsing -----------------------------------------------------------------------------------------------------


def parse_sweep_manifests(text: str, source: str) -> Sweep:
    """The one ``PreferenceTrainingSweep`` among the YAML documents in ``text`` (read from ``source``), parsed."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise SpecError(f"{source}: not valid YAML: {e}") from None
    sweeps = [d for d in docs if isinstance(d, dict) and d.get("kind") == SWEEP_KIND]
    if len(sweeps) != 1:
        raise SpecError(f"{source}: expected exactly one {SWEEP_KIND} document, found {len(sweeps)}")
    return parse_sweep(sweeps[0], source)


def parse_sweep(doc: Mapping[str, Any], source: str = "sweep") -> Sweep:
    """Parse a sweep document; :class:`SpecError` names the field (``source: spec.parameters[0].path: ...``)."""
    try:
        return _parse(doc)
    except SpecError as e:
        raise SpecError(f"{source}: {e}") from None


def _parse(doc: Mapping[str, Any]) -> Sweep:
    meta, spec = doc.get("metadata"), doc.get("spec")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise SpecError("metadata.name: required")
    if not isinstance(spec, Mapping):
        raise SpecError(f"spec: must be an object, got {type(spec).__name__}")
    template = spec.get("template")
    if not isinstance(template, Mapping):
        raise SpecError("spec.template: must be a PreferenceTrainingJob spec (an object)")
    has_grid, has_list = spec.get("parameters") is not None, spec.get("trials") is not None
    if has_grid == has_list:
        raise SpecError("spec: set exactly one of parameters (a grid) and trials (an explicit list)")
    name = str(meta["name"])
    combos = _grid(spec["parameters"]) if has_grid else _listed(spec["trials"])
    return Sweep(
        name=name,
        namespace=str(meta.get("namespace") or "default"),
        template=dict(template),
        trials=tuple(Trial(i, child_name(name, str(i)), o, w) for i, (o, w) in enumerate(combos)),
        objective=_objective(spec.get("objective")),
        parallelism=_positive_int(spec.get("parallelism", 1), "spec.parallelism"),
        suspend=_bool(spec.get("suspend", False), "spec.suspend"),
    )


Combo = tuple[tuple[tuple[str, Any], ...], tuple[str, ...]]


def _grid(value: Any) -> list[Combo]:
    """Every combination of the parameters' values, in nested-loop order, with where each value is written."""
    items = _list(value, "spec.parameters")
    axes = []
    for i, item in enumerate(items):
        where = f"spec.parameters[{i}]"
        if not isinstance(item, Mapping):
            raise SpecError(f"{where}: must be an object with path and values")
        axes.append((check_path(item.get("path"), f"{where}.path"), _list(item.get("values"), f"{where}.values")))
    count = math.prod(len(values) for _, values in axes)
    if count > MAX_TRIALS:
        raise SpecError(f"spec.parameters: the grid has {count} combinations; a sweep runs at most {MAX_TRIALS}")
    return [
        (
            tuple((path, values[j]) for (path, values), j in zip(axes, picks, strict=True)),
            tuple(f"spec.parameters[{i}].values[{j}]" for i, j in enumerate(picks)),
        )
        for picks in itertools.product(*(range(len(values)) for _, values in axes))
    ]


def _listed(value: Any) -> list[Combo]:
    items = _list(value, "spec.trials")
    if len(items) > MAX_TRIALS:
        raise SpecError(f"spec.trials: {len(items)} trials; a sweep runs at most {MAX_TRIALS}")
    out: list[Combo] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or not item:
            raise SpecError(f"spec.trials[{i}]: must be a non-empty object of path: value overrides")
        overrides = tuple((check_path(path, f"spec.trials[{i}]"), v) for path, v in item.items())
        out.append((overrides, tuple(f"spec.trials[{i}].{path}" for path, _ in overrides)))
    return out


def _objective(value: Any) -> Objective:
    if not isinstance(value, Mapping):
        raise SpecError("spec.objective: required: {metric: <an evaluation metric>, goal: maximize | minimize}")
    metric, goal = value.get("metric"), value.get("goal")
    if not isinstance(metric, str) or not metric:
        raise SpecError(f"spec.objective.metric: must be an evaluation metric name, got {metric!r}")
    if goal not in GOALS:
        raise SpecError(f"spec.objective.goal: must be maximize or minimize, got {goal!r}")
    return Objective(metric, str(goal))


def check_path(path: Any, where: str) -> str:
    """``path`` when it is a dotted path of field names outside the reserved ones; else :class:`SpecError`."""
    if not isinstance(path, str) or not PATH.match(path):
        raise SpecError(f"{where}: {path!r} is not a dotted path of job spec fields, e.g. algorithm.beta")
    reserved = next((r for r in RESERVED_PATHS if path == r or path.startswith(r + ".")), None)
    if reserved is not None:
        raise SpecError(f"{where}: {path!r} is set by the sweep for every trial ({reserved}); it cannot be swept")
    return path


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise SpecError(f"{where}: must be a non-empty list")
    return value


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{where}: must be an integer >= 1, got {value!r}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{where}: must be true or false, got {value!r}")
    return value


# -- trials ------------------------------------------------------------------------------------------------------


def output_uri(template: Mapping[str, Any], trial: str) -> str:
    base = str((template.get("output") or {}).get("uri") or "").rstrip("/")
    return f"{base}/{trial}"


def trial_spec(template: Mapping[str, Any], trial: Trial, suspend: bool) -> dict[str, Any]:
    """The trial's job spec: the template with the trial's overrides and what the sweep sets."""
    spec = copy.deepcopy(dict(template))
    for i, (path, value) in enumerate(trial.overrides):
        where = trial.origins[i] if i < len(trial.origins) else path
        _set_path(spec, path, copy.deepcopy(value), where)
    spec.pop("ttlSecondsAfterFinished", None)
    spec["suspend"] = suspend
    spec["output"] = {**(spec.get("output") or {}), "uri": output_uri(template, trial.name)}
    return spec


def _set_path(spec: dict[str, Any], path: str, value: Any, where: str) -> None:
    node = spec
    parts = path.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise SpecError(redact(f"{where}: cannot set {path}: {prefix} is {json.dumps(child)}, not an object"))
        node = child
    node[parts[-1]] = value


def trial_manifest(sweep: Sweep, trial: Trial) -> dict[str, Any]:
    """The trial's PreferenceTrainingJob manifest (local mode: no owner, the sweep's name as a label)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": trial.name,
            "namespace": sweep.namespace,
            "labels": {"prefops.dev/sweep": sweep.name, "prefops.dev/trial-index": str(trial.index)},
        },
        "spec": trial_spec(sweep.template, trial, sweep.suspend),
    }


def trial_job(sweep: Sweep, trial: Trial) -> Job:
    """The trial's job, parsed; :class:`SpecError` naming where the sweep sets each field at fault."""
    job, found = _trial_checked(sweep, trial)
    if job is None or found:
        raise SpecError("; ".join(found))
    return job


def _trial_checked(sweep: Sweep, trial: Trial) -> tuple[Job | None, list[str]]:
    """The trial's job (None when its structure is wrong) and its problems, each located in the sweep: the job's
    own checks, an objective its algorithm does not report, no eval split."""
    try:
        job = parse_structure(trial_manifest(sweep, trial), trial.name)
    except SpecError as e:
        return None, [locate(trial, str(e).removeprefix(f"{trial.name}: "))]
    found = check_semantics(job.spec)
    name, metric = job.spec.algorithm.name, sweep.objective.metric
    if name in ALGORITHMS and metric not in ALGORITHMS[name].eval_metrics:
        valid = ", ".join(ALGORITHMS[name].eval_metrics) or "none"
        found.append(
            f"spec.algorithm.name: algorithm {name!r} does not report the objective's metric {metric!r} "
            f"(spec.objective.metric); its evaluation metrics: {valid}"
        )
    if not job.spec.dataset.eval_split:
        found.append("spec.dataset.evalSplit: a sweep ranks its trials by an evaluation on this split; set it")
    return job, [locate(trial, p) for p in found]


def problems(sweep: Sweep) -> list[str]:
    """Every problem of the sweep, each naming where in the sweep it comes from: overlapping paths, and trials whose
    job is invalid, lacks an eval split or does not report the objective's metric."""
    found = _overlaps(sweep.trials)
    for trial in sweep.trials:
        found += _trial_checked(sweep, trial)[1]
    return list(dict.fromkeys(found))


def _overlaps(trials: Sequence[Trial]) -> list[str]:
    found = []
    for trial in trials:
        paths = [path for path, _ in trial.overrides]
        for i, a in enumerate(paths):
            for b in paths[:i]:
                if a == b or a.startswith(b + ".") or b.startswith(a + "."):
                    where = trial.origins[i].rsplit(".values[", 1)[0] if trial.origins else a
                    found.append(f"{where}: {a!r} overlaps {b!r}: set each field once")
    return found


def locate(trial: Trial, problem: str) -> str:
    """``problem`` (about a field of the trial's job) prefixed with where the sweep sets that field: the override
    that does, or ``spec.template``."""
    match = _FIELD.search(problem)
    field = match.group(0) if match else ""
    for i, (path, value) in enumerate(trial.overrides):
        target = f"spec.{path}"
        if field == target or field.startswith(target + ".") or target.startswith(field + "."):
            where = trial.origins[i] if i < len(trial.origins) else target
            return redact(f"{where} ({path}={json.dumps(value)}, trial {trial.name}): {problem}")
    if problem.startswith("spec."):
        return redact("spec.template." + problem.removeprefix("spec."))
    return redact(f"spec.template: {problem}")


# -- ranking -----------------------------------------------------------------------------------------------------


def best(outcomes: Sequence[tuple[str, float | None]], objective: Objective) -> int | None:
    """The index of the best trial among ``outcomes`` (phase, objective value), in trial order: the succeeded trial
    with the best value, the earlier one on a tie; None when no succeeded trial has a value."""
    found: tuple[float, int] | None = None
    for i, (phase, value) in enumerate(outcomes):
        if phase != "Succeeded" or value is None:
            continue
        if found is None or objective.better(value, found[0]):
            found = (value, i)
    return None if found is None else found[1]
