"""A sweep's trials: the grid (or list) expanded into deterministic trials, each trial's job built from the template,
and the checks a sweep must pass before its first trial starts. Pure.

- **Order and names.** A grid expands like nested loops in the order the parameters are written, the last one
  varying fastest; trial ``i`` (from 0) is the PreferenceTrainingJob ``<sweep>-<i>`` (at most 63 characters: a
  long sweep name keeps a prefix and a hash, see :func:`.naming.child_name`).
- **Overrides.** ``path: value`` replaces what the template holds at that path (objects and lists are replaced
  whole, not merged); missing intermediate objects are created.
- **What the sweep sets.** Every trial writes to ``<template output.uri>/<trial>``, is suspended exactly when the
  sweep is, and lives as long as the sweep (``ttlSecondsAfterFinished`` is dropped: the sweep reads the trials'
  results from their status).
- **Credentials.** Every message here that quotes a value hides the user information of a URI in it
  (:func:`.userinfo.redact`): it lands in the sweep's conditions, its Events and the operator's log.
- **Reference sharing.** :func:`reference_group` is the part of a trial's spec that decides the trainer's
  reference-cache key (trainer/src/prefops_trainer/core/cachekey.py and inputs.py): trials with the same group share one
  reference pass.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .algorithms import ALGORITHMS
from .naming import child_name
from .spec import API_VERSION, KIND, InvalidSpec, parse_spec
from .sweep_spec import MAX_TRIALS, SWEEP_KIND, Sweep
from .userinfo import redact
from .validation import semantic_problems

LABEL_SWEEP = "prefops.dev/sweep"
LABEL_TRIAL = "prefops.dev/trial-index"
#: Defaults of the reference-cache fields, as the job CRD defaults them (a template applied by hand may lack them).
_REFERENCE_DEFAULTS = {
    "model.revision": None,
    "model.dtype": "auto",
    "dataset.split": "train",
    "dataset.evalSplit": None,
    "dataset.maxSamples": None,
    "dataset.maxLength": 1024,
    "dataset.truncationMode": "keep_start",
}
_FIELD = re.compile(r"\bspec\.[A-Za-z0-9_.\[\]]+")


@dataclass(frozen=True)
class Trial:
    """One point of the sweep. ``origins`` says where each override is written in the sweep's spec (for errors)."""

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


def trial_name(sweep: str, index: int) -> str:
    return child_name(sweep, str(index))


def expand(sweep: Sweep) -> tuple[Trial, ...]:
    """Every trial of the sweep, in order; :class:`InvalidSpec` when there are more than :data:`MAX_TRIALS`."""
    spec, name = sweep.spec, sweep.meta.name
    if spec.trials is not None:
        combos = [(o, tuple(f"spec.trials[{i}].{path}" for path, _ in o)) for i, o in enumerate(spec.trials)]
    else:
        count = math.prod(len(p.values) for p in spec.parameters)
        if count > MAX_TRIALS:
            raise InvalidSpec(f"spec.parameters: the grid has {count} combinations; a sweep runs at most {MAX_TRIALS}")
        combos = []
        for picks in itertools.product(*(range(len(p.values)) for p in spec.parameters)):
            overrides = tuple((p.path, p.values[j]) for p, j in zip(spec.parameters, picks, strict=True))
            combos.append((overrides, tuple(f"spec.parameters[{i}].values[{j}]" for i, j in enumerate(picks))))
    if len(combos) > MAX_TRIALS:
        raise InvalidSpec(f"spec.trials: {len(combos)} trials; a sweep runs at most {MAX_TRIALS}")
    return tuple(Trial(i, trial_name(name, i), o, w) for i, (o, w) in enumerate(combos))


def output_uri(template: Mapping[str, Any], trial: str) -> str:
    base = str((template.get("output") or {}).get("uri") or "").rstrip("/")
    return f"{base}/{trial}"


def trial_spec(template: Mapping[str, Any], trial: Trial, suspend: bool) -> dict[str, Any]:
    """The trial's job spec: the template with the trial's overrides and what the sweep sets."""
    spec = copy.deepcopy(dict(template))
    for i, (path, value) in enumerate(trial.overrides):
        where = trial.origins[i] if i < len(trial.origins) else path
        set_path(spec, path, copy.deepcopy(value), where)
    spec.pop("ttlSecondsAfterFinished", None)
    spec["suspend"] = suspend
    spec["output"] = {**(spec.get("output") or {}), "uri": output_uri(template, trial.name)}
    return spec


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
    node: Any = spec
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def owner_reference(sweep: Sweep) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": SWEEP_KIND,
        "name": sweep.meta.name,
        "uid": sweep.meta.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def trial_manifest(sweep: Sweep, trial: Trial, suspend: bool) -> dict[str, Any]:
    """The trial's PreferenceTrainingJob, owned by the sweep (deleting the sweep deletes it)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": trial.name,
            "namespace": sweep.meta.namespace,
            "labels": {LABEL_SWEEP: sweep.meta.name, LABEL_TRIAL: str(trial.index)},
            "ownerReferences": [owner_reference(sweep)],
        },
        "spec": trial_spec(sweep.spec.template, trial, suspend),
    }


def reference_group(spec: Mapping[str, Any]) -> str | None:
    """What decides the trainer's reference-cache key of a job spec (docs/contract.md §9), as a string; ``None`` for
    a job without a precompute phase. The model and dataset are named by their sources: two trials of one sweep
    read the same files."""
    name = get_path(spec, "algorithm.name")
    rule = ALGORITHMS.get(str(name))
    precompute = get_path(spec, "reference.precompute")
    if rule is None or not (rule.reference_based if precompute is None else precompute):
        return None
    key = {path: get_path(spec, path, default) for path, default in _REFERENCE_DEFAULTS.items()}
    key |= {"algorithm.name": name, "model.source": get_path(spec, "model.source")}
    key["dataset.source"] = get_path(spec, "dataset.source")
    if name == "kto":  # KTO's KL completions are paired within a training batch (prefops_trainer.inputs)
        key["training.perDeviceBatchSize"] = get_path(spec, "training.perDeviceBatchSize", 4)
        key["kl"] = (get_path(spec, "algorithm.lossType") or ["kto"])[0] == "kto"
    return json.dumps(key, sort_keys=True)


# -- checks before the first trial starts ------------------------------------------------------------------------


def sweep_problems(sweep: Sweep, trials: Sequence[Trial]) -> list[str]:
    """Every problem of the sweep the CRD schema lets through, each naming the field of the sweep it comes from:
    overlapping paths, trials whose job spec the operator would reject, an objective that is not an evaluation
    metric of a trial's algorithm, a trial without an eval split."""
    problems = _overlaps(trials)
    for trial in trials:
        problems += _trial_problems(sweep, trial)
    return list(dict.fromkeys(problems))


def _overlaps(trials: Iterable[Trial]) -> list[str]:
    problems = []
    for trial in trials:
        paths = [path for path, _ in trial.overrides]
        for i, a in enumerate(paths):
            for b in paths[:i]:
                if a == b or a.startswith(b + ".") or b.startswith(a + "."):
                    where = trial.origins[i].rsplit(".values[", 1)[0] if trial.origins else a
                    problems.append(f"{where}: {a!r} overlaps {b!r}: set each field once")
    return problems


def _trial_problems(sweep: Sweep, trial: Trial) -> list[str]:
    try:
        raw = trial_spec(sweep.spec.template, trial, suspend=False)
    except InvalidSpec as e:  # an override through a value: the message names the override
        return [str(e)]
    raw["output"]["uri"] = get_path(sweep.spec.template, "output.uri")  # valid exactly when <uri>/<trial> is
    try:
        spec = parse_spec(raw)
    except InvalidSpec as e:
        return [locate(trial, str(e))]
    problems = [locate(trial, p) for p in semantic_problems(spec)]
    rule = ALGORITHMS.get(spec.algorithm.name)
    metric = sweep.spec.objective.metric
    if rule is not None and metric not in rule.eval_metrics:
        valid = ", ".join(rule.eval_metrics) or "none"
        problems.append(
            locate(
                trial,
                f"spec.algorithm.name: algorithm {rule.name!r} does not report the objective's metric {metric!r} "
                f"(spec.objective.metric); its evaluation metrics: {valid}",
            )
        )
    if not spec.eval_split:
        problems.append(
            locate(trial, "spec.dataset.evalSplit: a sweep ranks its trials by an evaluation on this split; set it")
        )
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


def dropped_overrides(trial: Trial, served: Mapping[str, Any]) -> list[str]:
    """Overrides the apiserver pruned from the trial's job (``served``: its spec after a dry-run create): a path
    that is not a field of the job schema, or a value with unknown fields."""
    problems = []
    for i, (path, value) in enumerate(trial.overrides):
        where = trial.origins[i] if i < len(trial.origins) else path
        got = get_path(served, path, _MISSING)
        if got is _MISSING:
            problems.append(f"{where}: {path!r} is not a field of the PreferenceTrainingJob spec")
        elif not _contains(got, value):
            problems.append(redact(f"{where}: {path}: the job schema keeps {json.dumps(got)} of {json.dumps(value)}"))
    return problems


def rejected(trial: Trial, message: str) -> str:
    """The apiserver's refusal of the trial's job (a 422 naming a field), located in the sweep's spec."""
    return locate(trial, f"the job schema rejects the trial: {message}")


_MISSING = object()


def _contains(served: Any, given: Any) -> bool:
    """Whether ``served`` holds everything ``given`` does (the apiserver may add defaults, never drop fields)."""
    if isinstance(given, Mapping):
        return isinstance(served, Mapping) and all(k in served and _contains(served[k], v) for k, v in given.items())
    if isinstance(given, list):
        return isinstance(served, list) and len(served) == len(given) and all(map(_contains, served, given))
    return bool(served == given)
