# Generated from trainer/src/prefops_trainer/core/rules/trials.py
# by scripts/gen_shared_copies.py (a test checks it is current): do not edit.
"""A sweep's trials: the grid (or list) expanded into deterministic trials, each trial's job built from the template,
the checks a sweep must pass before its first trial starts, and the ranking of finished trials. Pure.

- **Order and names.** A grid expands like nested loops in the order the parameters are written, the last one
  varying fastest; trial ``i`` (from 0) is the PreferenceTrainingJob ``<sweep>-<i>`` (at most 63 characters: a
  long sweep name keeps a prefix and a hash, see :func:`.names.child_name`). At most :data:`.MAX_TRIALS`.
- **Overrides.** ``path: value`` replaces what the template holds at that path (objects and lists are replaced
  whole, not merged); missing intermediate objects are created.
- **What the sweep sets.** Every trial writes to ``<template output.uri>/<trial>``, is suspended exactly when the
  sweep is, and lives as long as the sweep (``ttlSecondsAfterFinished`` is dropped: the sweep reads the trials'
  results from their status).
- **Credentials.** Every message here that quotes a value hides the user information of a URI in it
  (:func:`.userinfo.redact`): it lands in the sweep's conditions, its Events and the operators' and trainers' logs.
- **Ranking.** A trial's value is its final evaluation's objective metric; the best is the succeeded trial with
  the highest (``maximize``) or lowest value, the earlier one on a tie; failed trials never win.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InvalidSpec
from .names import child_name
from .sweep_spec import MAX_TRIALS, Objective, Overrides, SweepSpec
from .userinfo import redact

API_VERSION = "prefops.dev/v1alpha1"
JOB_KIND = "PreferenceTrainingJob"
LABEL_SWEEP = "prefops.dev/sweep"
LABEL_TRIAL = "prefops.dev/trial-index"
#: The first field path a problem message names (``spec.algorithm.lossType: ...``).
_FIELD = re.compile(r"\bspec\.[A-Za-z0-9_.\[\]]+")
#: A trial's overrides and, for each, where it is written in the sweep's spec.
Combo = tuple[Overrides, tuple[str, ...]]


@dataclass(frozen=True)
class Trial:
    """One point of the sweep. ``origins`` says where each override is written in the sweep's spec (for errors)."""

    index: int
    name: str
    overrides: Overrides
    origins: tuple[str, ...] = ()

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.overrides)

    def describe(self) -> str:
        """``algorithm.beta=0.1, algorithm.lossType=["ipo"]``."""
        return redact(", ".join(f"{path}={json.dumps(value, separators=(',', ':'))}" for path, value in self.overrides))

    def origin(self, i: int) -> str:
        """Where override ``i`` is written in the sweep (its path when the trial was built by hand)."""
        return self.origins[i] if i < len(self.origins) else self.overrides[i][0]


@dataclass(frozen=True)
class TrialRow:
    """What a sweep shows of one trial, under the same keys in the sweep's ``status.trials`` (the operator) and in
    ``sweep.json`` (``prefops-trainer sweep``)."""

    name: str
    index: int
    parameters: Mapping[str, Any]
    phase: str
    output: str | None = None
    objective: float | None = None
    step: int | None = None
    cache_hit: bool | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.index,
            "parameters": dict(self.parameters),
            "phase": self.phase,
            "objective": self.objective,
            "step": self.step,
            "cacheHit": self.cache_hit,
            "output": self.output,
            "message": self.message,
        }


def trial_name(sweep: str, index: int) -> str:
    return child_name(sweep, str(index))


def expand(sweep: str, spec: SweepSpec) -> tuple[Trial, ...]:
    """Every trial of the sweep named ``sweep``, in order; :class:`InvalidSpec` when there are more than
    :data:`MAX_TRIALS`."""
    combos = _listed(spec.trials) if spec.trials is not None else _grid(spec)
    if len(combos) > MAX_TRIALS:
        raise InvalidSpec(f"spec.trials: {len(combos)} trials; a sweep runs at most {MAX_TRIALS}")
    return tuple(Trial(i, trial_name(sweep, i), o, w) for i, (o, w) in enumerate(combos))


def _listed(trials: Sequence[Overrides]) -> list[Combo]:
    return [(o, tuple(f"spec.trials[{i}].{path}" for path, _ in o)) for i, o in enumerate(trials)]


def _grid(spec: SweepSpec) -> list[Combo]:
    count = math.prod(len(p.values) for p in spec.parameters)
    if count > MAX_TRIALS:
        raise InvalidSpec(f"spec.parameters: the grid has {count} combinations; a sweep runs at most {MAX_TRIALS}")
    return [
        (
            tuple((p.path, p.values[j]) for p, j in zip(spec.parameters, picks, strict=True)),
            tuple(f"spec.parameters[{i}].values[{j}]" for i, j in enumerate(picks)),
        )
        for picks in itertools.product(*(range(len(p.values)) for p in spec.parameters))
    ]


# -- each trial's job ---------------------------------------------------------------------------------------------


def output_uri(template: Mapping[str, Any], trial: str) -> str:
    base = str((template.get("output") or {}).get("uri") or "").rstrip("/")
    return f"{base}/{trial}"


def trial_spec(template: Mapping[str, Any], trial: Trial, suspend: bool) -> dict[str, Any]:
    """The trial's job spec: the template with the trial's overrides and what the sweep sets."""
    spec = copy.deepcopy(dict(template))
    for i, (path, value) in enumerate(trial.overrides):
        set_path(spec, path, copy.deepcopy(value), trial.origin(i))
    spec.pop("ttlSecondsAfterFinished", None)
    spec["suspend"] = suspend
    spec["output"] = {**(spec.get("output") or {}), "uri": output_uri(template, trial.name)}
    return spec


def trial_manifest(
    sweep: str, namespace: str, template: Mapping[str, Any], trial: Trial, suspend: bool
) -> dict[str, Any]:
    """The trial's PreferenceTrainingJob, labelled with its sweep and index (no owner: the operator adds its own)."""
    return {
        "apiVersion": API_VERSION,
        "kind": JOB_KIND,
        "metadata": {
            "name": trial.name,
            "namespace": namespace,
            "labels": {LABEL_SWEEP: sweep, LABEL_TRIAL: str(trial.index)},
        },
        "spec": trial_spec(template, trial, suspend),
    }


def set_path(spec: dict[str, Any], path: str, value: Any, where: str) -> None:
    """``spec[a][b][c] = value`` for ``path`` ``a.b.c``, creating missing objects; a non-object on the way is an
    :class:`InvalidSpec` naming ``where``."""
    node = spec
    parts = path.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise InvalidSpec(redact(f"{where}: cannot set {path}: {prefix} is {json.dumps(child)}, not an object"))
        node = child
    node[parts[-1]] = value


def get_path(spec: Mapping[str, Any], path: str, default: Any = None) -> Any:
    """What ``spec`` holds at the dotted ``path``; ``default`` when something on the way is missing."""
    node: Any = spec
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


# -- checks before the first trial starts ------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedJob:
    """What a side's job parser says of a trial's job spec: its algorithm, that algorithm's evaluation metrics
    (``None`` when the algorithm is unknown), its eval split, and the job's own problems (``spec.<field>: ...``)."""

    algorithm: str
    eval_metrics: tuple[str, ...] | None
    eval_split: str | None
    problems: tuple[str, ...]


#: Parse and check a trial's job spec: a :class:`CheckedJob`, or :class:`InvalidSpec` when it cannot be parsed.
JobCheck = Callable[[dict[str, Any]], CheckedJob]


def sweep_problems(spec: SweepSpec, trials: Sequence[Trial], check: JobCheck) -> list[str]:
    """Every problem of the sweep, each naming the field of the sweep it comes from: overlapping paths, trials whose
    job spec ``check`` rejects, an objective that is not an evaluation metric of a trial's algorithm, a trial without
    an eval split."""
    problems = overlaps(trials)
    for trial in trials:
        problems += _trial_problems(spec, trial, check)
    return list(dict.fromkeys(problems))


def overlaps(trials: Iterable[Trial]) -> list[str]:
    """A trial's paths that set one field twice (``a`` and ``a.b``), named where the later one is written."""
    problems = []
    for trial in trials:
        paths = [path for path, _ in trial.overrides]
        for i, a in enumerate(paths):
            for b in paths[:i]:
                if a == b or a.startswith(b + ".") or b.startswith(a + "."):
                    where = trial.origins[i].rsplit(".values[", 1)[0] if trial.origins else a
                    problems.append(f"{where}: {a!r} overlaps {b!r}: set each field once")
    return problems


def _trial_problems(spec: SweepSpec, trial: Trial, check: JobCheck) -> list[str]:
    try:
        raw = trial_spec(spec.template, trial, suspend=False)
    except InvalidSpec as e:  # an override through a value: the message names the override
        return [str(e)]
    raw["output"]["uri"] = get_path(spec.template, "output.uri")  # valid exactly when <uri>/<trial> is
    try:
        job = check(raw)
    except InvalidSpec as e:
        return [locate(trial, str(e))]
    return [locate(trial, p) for p in (*job.problems, *_sweep_needs(job, spec.objective.metric))]


def _sweep_needs(job: CheckedJob, metric: str) -> list[str]:
    """What a sweep needs of a trial's job beyond the job's own checks: the objective's metric and an eval split."""
    problems = []
    if job.eval_metrics is not None and metric not in job.eval_metrics:
        valid = ", ".join(job.eval_metrics) or "none"
        problems.append(
            f"spec.algorithm.name: algorithm {job.algorithm!r} does not report the objective's metric {metric!r} "
            f"(spec.objective.metric); its evaluation metrics: {valid}"
        )
    if not job.eval_split:
        problems.append("spec.dataset.evalSplit: a sweep ranks its trials by an evaluation on this split; set it")
    return problems


def locate(trial: Trial, problem: str) -> str:
    """``problem`` (about a field of the trial's job spec) prefixed with where the sweep sets that field: the
    override that does, or ``spec.template``."""
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
