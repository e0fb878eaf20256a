"""A sweep's trials on a cluster: each trial's job owned by the sweep, the reference groups that let trials share one
reference pass, and the checks a sweep must pass before its first trial starts, the apiserver's verdict included.
Pure.

The rules themselves (expansion, names, overrides, what the sweep sets, the checks' messages, ranking) are shared
with the trainer's local sweeps: :mod:`.rules.trials` says them once.

- **Reference sharing.** :func:`reference_group` is the part of a trial's spec that decides the trainer's
  reference-cache key (trainer/src/prefops_trainer/core/cachekey.py and inputs.py): trials with the same group share one
  reference pass.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .algorithms import ALGORITHMS
from .rules import trials as rules
from .rules.trials import LABEL_SWEEP as LABEL_SWEEP
from .rules.trials import LABEL_TRIAL as LABEL_TRIAL
from .rules.trials import CheckedJob, Trial, get_path, locate
from .rules.userinfo import redact
from .spec import API_VERSION, parse_spec
from .sweep_spec import SWEEP_KIND, Sweep
from .validation import semantic_problems

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


def expand(sweep: Sweep) -> tuple[Trial, ...]:
    """Every trial of the sweep, in order (:func:`.rules.trials.expand`)."""
    return rules.expand(sweep.meta.name, sweep.spec)


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
    manifest = rules.trial_manifest(sweep.meta.name, sweep.meta.namespace, sweep.spec.template, trial, suspend)
    manifest["metadata"]["ownerReferences"] = [owner_reference(sweep)]
    return manifest


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
    """Every problem of the sweep the CRD schema lets through, each naming the field of the sweep it comes from
    (:func:`.rules.trials.sweep_problems`, each trial's job checked as the operator checks a job)."""
    return rules.sweep_problems(sweep.spec, trials, check_trial)


def check_trial(raw: dict[str, Any]) -> CheckedJob:
    """A trial's job spec as the operator's parser sees it (:data:`.rules.trials.JobCheck`)."""
    spec = parse_spec(raw)
    rule = ALGORITHMS.get(spec.algorithm.name)
    metrics = rule.eval_metrics if rule is not None else None
    return CheckedJob(spec.algorithm.name, metrics, spec.eval_split, tuple(semantic_problems(spec)))


def dropped_overrides(trial: Trial, served: Mapping[str, Any]) -> list[str]:
    """Overrides the apiserver pruned from the trial's job (``served``: its spec after a dry-run create): a path
    that is not a field of the job schema, or a value with unknown fields."""
    problems = []
    for i, (path, value) in enumerate(trial.overrides):
        where = trial.origin(i)
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
