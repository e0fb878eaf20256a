"""Will it fit? The memory plan of a ``PreferenceTrainingJob`` from its spec and its model's ``config.json`` alone.

``plan(spec, config, ...)`` gives, for each phase (reference pass, training, export), the per-device memory by
component at the phase's peak, host RAM, disk and CPUs per pod, the verdict against the device's memory and, when
the job does not fit, the smallest changes that make it fit, each with its estimate. docs/planner.md gives every
formula, its source and what is not modelled.

Pure and stdlib-only: the operator runs the same code at admission. This package's source of truth lives in the
trainer (``prefops_trainer.core.planner``); ``scripts/gen_shared_copies.py`` copies it into the operator
(``prefops_operator.core.planner``) and a test checks the copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import terms
from .advice import Suggestion, suggest
from .job import PlanInputError, PlanJob, format_bytes, job_from_spec, parse_quantity
from .model import ModelConfigError, ModelShape, shape_from_config
from .phases import (
    COMPONENTS,
    DevicePlan,
    PhasePlan,
    phase_plans,
    precompute_device,
    reference_sharding,
    training_device,
)

__all__ = [
    "COMPONENTS",
    "DevicePlan",
    "ModelConfigError",
    "ModelShape",
    "PhasePlan",
    "Plan",
    "PlanInputError",
    "PlanJob",
    "Suggestion",
    "format_bytes",
    "job_from_spec",
    "parse_quantity",
    "plan",
    "plan_job",
    "shape_from_config",
]


@dataclass(frozen=True)
class Plan:
    """A job's plan. ``memory`` is the device memory judged against (bytes; None when unknown, or for CPU-only
    jobs), ``memory_source`` where it came from; ``fits`` is None when there is nothing to judge against."""

    job: PlanJob
    shape: ModelShape
    phases: tuple[PhasePlan, ...]
    memory: int | None
    memory_source: str | None
    suggestions: tuple[Suggestion, ...]
    notes: tuple[str, ...]

    @property
    def reference_sharding(self) -> str:
        """How the precompute pods hold the reference model: ``replicated`` or ``zero3`` (``auto`` resolved)."""
        return reference_sharding(terms.setup(self.job, self.shape))

    @property
    def trainable(self) -> int:
        return terms.setup(self.job, self.shape).trainable

    def phase(self, name: str) -> PhasePlan:
        return next(p for p in self.phases if p.name == name)

    def fits_phase(self, phase: PhasePlan) -> bool | None:
        if phase.device is None:
            return True
        if self.memory is None:
            return None
        return phase.device.total <= self.memory

    @property
    def fits(self) -> bool | None:
        verdicts = [self.fits_phase(p) for p in self.phases if p.device is not None]
        if any(v is False for v in verdicts):
            return False
        return None if any(v is None for v in verdicts) else True

    @property
    def peak(self) -> PhasePlan:
        """The phase with the most per-device memory."""
        return max((p for p in self.phases if p.device), key=lambda p: p.device.total if p.device else 0)

    @property
    def headroom(self) -> int | None:
        if self.memory is None or self.peak.device is None:
            return None
        return self.memory - self.peak.device.total


def plan(
    spec: Mapping[str, Any],
    config: Mapping[str, Any],
    *,
    reward_config: Mapping[str, Any] | None = None,
    gpu_memory: int | None = None,
    memory_source: str | None = None,
) -> Plan:
    """Plan the job whose manifest ``spec`` is given (camelCase, as written), for the model of ``config`` (its
    parsed ``config.json``) and, for Online DPO, the reward model of ``reward_config``. ``gpu_memory`` (bytes)
    overrides ``spec.resources.gpuMemory``. Raises :class:`PlanInputError` or :class:`ModelConfigError` naming the
    field or key at fault."""
    job = job_from_spec(spec, gpu_memory)
    source = memory_source or ("--gpu-memory" if gpu_memory is not None else "spec.resources.gpuMemory")
    shape = shape_from_config(config)
    reward = shape_from_config(reward_config) if reward_config is not None else None
    return plan_job(job, shape, reward, source if job.gpu_memory is not None else None)


def plan_job(job: PlanJob, shape: ModelShape, reward: ModelShape | None = None, source: str | None = None) -> Plan:
    phases = phase_plans(terms.setup(job, shape), reward)
    memory = job.gpu_memory if job.gpu else None
    draft = Plan(job, shape, phases, memory, source if memory is not None else None, (), _notes(job, shape, reward))
    if draft.fits is not False or memory is None:
        return draft
    return replace(draft, suggestions=_suggestions(draft, reward, memory))


def _suggestions(draft: Plan, reward: ModelShape | None, memory: int) -> tuple[Suggestion, ...]:
    out: list[Suggestion] = []
    for phase in draft.phases:
        if draft.fits_phase(phase) is not False:
            continue
        if phase.name == "train":
            out += suggest(draft.job, "train", lambda j: training_device(terms.setup(j, draft.shape), reward).total,
                           memory)  # fmt: skip
        else:
            out += suggest(
                draft.job, phase.name, lambda j: precompute_device(terms.setup(j, draft.shape)).total, memory
            )
    return tuple(out)


def _notes(job: PlanJob, shape: ModelShape, reward: ModelShape | None) -> tuple[str, ...]:
    notes = []
    if not shape.known_family:
        notes.append(f"model_type {shape.model_type!r} is not one the planner knows; counted as a Llama-style decoder")
    if job.lora and shape.unknown_targets(job.lora.targets):
        names = ", ".join(shape.unknown_targets(job.lora.targets))
        notes.append(f"spec.model.lora.targetModules: {names} not among this model's linear layers; counted as none")
    if job.gpu and job.dtype == "auto":
        notes.append("spec.model.dtype auto planned as bfloat16 (GPUs from Ampere on; older ones train in float32)")
    if job.gpu and job.gpu_memory is None:
        notes.append("no device memory known (spec.resources.gpuMemory or --gpu-memory): no verdict")
    if not job.gpu:
        notes.append("a CPU-only job: its device memory is host memory (hostBytes), judged by the pod's limits")
    if shape.max_positions and job.max_length > shape.max_positions:
        notes.append(f"spec.dataset.maxLength {job.max_length} exceeds the model's context {shape.max_positions}")
    if job.family == "online-dpo" and reward is None:
        notes.append("no reward model config: Online DPO's reward model is not counted")
    return tuple(notes)
