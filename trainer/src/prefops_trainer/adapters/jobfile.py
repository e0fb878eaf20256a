"""Read a job or sweep manifest file: the one place the trainer reads its spec from disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..core.errors import SpecError
from ..core.rules.sweep_spec import SWEEP_KIND
from ..core.spec import Job, parse_manifests
from ..core.sweep import Sweep, parse_sweep_manifests, problems, trial_job


def load_job(path: str | Path) -> Job:
    """Read a job manifest from a YAML file and parse it; errors name the file and the field."""
    p = Path(path)
    return parse_manifests(_read(p, "job"), str(p))


def load_sweep(path: str | Path) -> Sweep:
    """Read a PreferenceTrainingSweep and check it: one :class:`SpecError` naming the file and every problem, each
    where the sweep sets the field at fault and, for a trial's, the trial (docs/contract.md §9)."""
    p = Path(path)
    sweep = parse_sweep_manifests(_read(p, "sweep"), str(p))
    found = problems(sweep)
    if found:
        raise SpecError(f"{p}: " + "; ".join(found))
    return sweep


def load_jobs(path: str | Path) -> list[Job]:
    """The job in ``path``, or each trial's job of the PreferenceTrainingSweep there (checked as :func:`load_sweep`
    checks it)."""
    p = Path(path)
    if not is_sweep(_read(p, "job")):
        return [load_job(p)]
    sweep = load_sweep(p)
    return [trial_job(sweep, trial) for trial in sweep.trials]


def is_sweep(text: str) -> bool:
    """Whether the YAML documents in ``text`` are a PreferenceTrainingSweep (and nothing else with a kind)."""
    return _kinds(text) == {SWEEP_KIND}


def _kinds(text: str) -> set[Any]:
    try:
        return {d.get("kind") for d in yaml.safe_load_all(text) if isinstance(d, dict)}
    except yaml.YAMLError:
        return set()  # the job parser names the problem


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: {what} file does not exist") from None
