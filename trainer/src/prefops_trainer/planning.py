"""``prefops-trainer plan``: the job's spec and its model's ``config.json`` (read from the model's source, or given)
into :mod:`prefops_trainer.core.planner`'s plan. Reads one small file per model, never the weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .adapters import sources
from .adapters.jobfile import load_jobs
from .core import planner
from .core.errors import SourceError, SpecError
from .core.planner.render import table, to_document
from .core.spec import Job


def plan_from_job(
    job: Job, gpu_memory: str | None, model_config: Path | None = None, reward_config: Path | None = None
) -> planner.Plan:
    """The plan of ``job``; ``gpu_memory`` (a quantity such as ``80Gi``) overrides ``spec.resources.gpuMemory``."""
    spec = job.spec
    config = _read(model_config) if model_config else sources.model_config(spec.model.source, spec.model.revision)
    reward = None
    if spec.reward_model is not None:
        rm = spec.reward_model
        reward = (
            _read(reward_config)
            if reward_config
            else sources.model_config(rm.source, rm.revision, "spec.rewardModel.source")
        )
    try:
        memory = None if gpu_memory is None else planner.parse_quantity(gpu_memory, "--gpu-memory")
        return planner.plan(spec_document(job), config, reward_config=reward, gpu_memory=memory)
    except (planner.PlanInputError, planner.ModelConfigError) as e:
        raise SpecError(str(e)) from None


def plan_file(
    path: Path, gpu_memory: str | None, model_config: Path | None = None, reward_config: Path | None = None
) -> dict[str, planner.Plan]:
    """The plan of the job in ``path`` by its name, or of each trial of the PreferenceTrainingSweep there."""
    jobs = load_jobs(path)
    return {job.name: plan_from_job(job, gpu_memory, model_config, reward_config) for job in jobs}


def spec_document(job: Job) -> dict[str, Any]:
    """The job's ``spec`` as the manifest writes it (camelCase), every default filled in: what the operator's copy
    of the planner reads from the stored object."""
    doc: dict[str, Any] = job.spec.model_dump(mode="json", by_alias=True)
    return doc


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SourceError(f"{path}: cannot read a config.json ({e})") from None
    if not isinstance(doc, dict):
        raise SourceError(f"{path}: not a JSON object")
    return doc


def render(plans: dict[str, planner.Plan], output: str) -> str:
    """One job's plan as its table or document; a sweep's as each trial's, by name (JSON: ``{"trials": {...}}``)."""
    if len(plans) == 1 and output == "json":
        return json.dumps(to_document(next(iter(plans.values()))), indent=2)
    if len(plans) == 1:
        return table(next(iter(plans.values())))
    if output == "json":
        return json.dumps({"trials": {name: to_document(p) for name, p in plans.items()}}, indent=2)
    return "\n\n".join(f"== trial {name}\n{table(p)}" for name, p in plans.items())
