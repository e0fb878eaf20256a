"""A ``PreferenceTrainingSweep`` as local mode runs it (docs/contract.md §9): parsed once into frozen objects, expanded
into trials, each trial's job built from the template and checked, the trials ranked. Pure.

The rules (expansion, names, overrides, the checks' messages, ranking) are the operator's own: they live once, in
:mod:`.rules` (copied into the operator by ``scripts/gen_shared_copies.py``). This module reads the YAML, turns
their :class:`~.rules.errors.InvalidSpec` into a :class:`SpecError` naming the file, and checks each trial's job
with the trainer's parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from .algorithms import ALGORITHMS
from .errors import SpecError
from .rules.errors import InvalidSpec
from .rules.sweep_spec import MAX_TRIALS, SWEEP_KIND, Objective, SweepSpec, parse_sweep_spec
from .rules.trials import (
    API_VERSION,
    CheckedJob,
    Trial,
    best,
    expand,
    locate,
    output_uri,
    sweep_problems,
    trial_spec,
)
from .rules.trials import trial_manifest as _trial_manifest
from .spec import KIND, Job, check_semantics, parse_structure

__all__ = [
    "API_VERSION",
    "MAX_TRIALS",
    "SWEEP_KIND",
    "Objective",
    "Sweep",
    "Trial",
    "best",
    "locate",
    "output_uri",
    "parse_sweep",
    "parse_sweep_manifests",
    "problems",
    "trial_job",
    "trial_manifest",
    "trial_spec",
]


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep: its ``spec`` (the template is a job spec as written) and ``trials``, its expansion in order."""

    name: str
    namespace: str
    spec: SweepSpec
    trials: tuple[Trial, ...]

    @property
    def template(self) -> Mapping[str, Any]:
        return self.spec.template

    @property
    def objective(self) -> Objective:
        return self.spec.objective

    @property
    def parallelism(self) -> int:
        return self.spec.parallelism

    @property
    def suspend(self) -> bool:
        return self.spec.suspend


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
    except InvalidSpec as e:
        raise SpecError(f"{source}: {e}") from None


def _parse(doc: Mapping[str, Any]) -> Sweep:
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise InvalidSpec("metadata.name: required")
    spec = parse_sweep_spec(doc.get("spec"))
    namespace = str(meta.get("namespace") or "default")
    return Sweep(name=meta["name"], namespace=namespace, spec=spec, trials=expand(meta["name"], spec))


def trial_manifest(sweep: Sweep, trial: Trial) -> dict[str, Any]:
    """The trial's PreferenceTrainingJob manifest (local mode: no owner, the sweep's name as a label)."""
    return _trial_manifest(sweep.name, sweep.namespace, sweep.template, trial, sweep.suspend)


def trial_job(sweep: Sweep, trial: Trial) -> Job:
    """The trial's job, parsed; :class:`SpecError` naming where the sweep sets each field at fault."""
    found = sweep_problems(sweep.spec, [trial], check_trial)
    if found:
        raise SpecError("; ".join(found))
    return parse_structure(trial_manifest(sweep, trial), trial.name)


def problems(sweep: Sweep) -> list[str]:
    """Every problem of the sweep, each naming where in the sweep it comes from: overlapping paths, and trials whose
    job is invalid, lacks an eval split or does not report the objective's metric."""
    return sweep_problems(sweep.spec, sweep.trials, check_trial)


def check_trial(spec: dict[str, Any]) -> CheckedJob:
    """A trial's job spec as the trainer's parser sees it (:data:`.rules.trials.JobCheck`)."""
    source = "trial"
    try:
        job = parse_structure({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": source}, "spec": spec})
    except SpecError as e:
        raise InvalidSpec(str(e).removeprefix(f"{source}: ")) from e
    name = job.spec.algorithm.name
    rule = ALGORITHMS.get(name)
    metrics = rule.eval_metrics if rule is not None else None
    return CheckedJob(name, metrics, job.spec.dataset.eval_split, tuple(check_semantics(job.spec)))
