# Generated from trainer/src/prefops_trainer/core/planner/advice.py
# by scripts/gen_shared_copies.py (a test checks it is current): do not edit.
"""When a job does not fit: the smallest changes that make it fit, each re-planned. Pure.

Each candidate is one change of the spec, tried in the order users reach for them: a smaller micro-batch with more
accumulation (the same effective batch), gradient checkpointing, a higher ZeRO stage, optimizer (and parameter)
offload to the host, more nodes, LoRA instead of full fine-tuning; for the reference pass, a smaller batch. The
ones that fit alone are listed; when none does, their combination in that order, as far as it takes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from .job import Lora, PlanJob

Candidate = tuple[PlanJob, str, dict[str, Any]]


@dataclass(frozen=True)
class Suggestion:
    """One change: ``change`` in words, ``fields`` as spec paths and new values, the per-device ``total`` it leads
    to (of the phase that did not fit) and whether that fits."""

    change: str
    fields: dict[str, Any]
    phase: str
    total: int
    fits: bool


def _batch(job: PlanJob) -> Iterator[Candidate]:
    """A smaller micro-batch (each divisor of it, largest first) with the accumulation that keeps the effective
    batch."""
    for batch in sorted((d for d in range(1, job.batch) if job.batch % d == 0), reverse=True):
        acc = job.accumulation * (job.batch // batch)
        text = (f"training.perDeviceBatchSize {job.batch} -> {batch}, gradientAccumulation {job.accumulation} -> {acc} "
                f"(same effective batch)")  # fmt: skip
        yield replace(job, batch=batch, accumulation=acc), text, {
            "training.perDeviceBatchSize": batch, "training.gradientAccumulation": acc}  # fmt: skip


def _checkpointing(job: PlanJob) -> Iterator[Candidate]:
    if not job.checkpointing:
        yield replace(job, checkpointing=True), "training.gradientCheckpointing: true", {
            "training.gradientCheckpointing": True}  # fmt: skip


def _zero(job: PlanJob) -> Iterator[Candidate]:
    if job.world_size > 1 and (job.zero_stage or 0) < 3:
        stage = 2 if job.zero_stage is None else 3
        for s in (stage, 3) if stage == 2 else (3,):
            yield replace(job, zero_stage=s), f"training.deepspeed.stage: {s}", {"training.deepspeed.stage": s}


def _offload(job: PlanJob) -> Iterator[Candidate]:
    if job.gpu and not job.offload:
        stage = job.zero_stage or (3 if job.world_size == 1 else 2)
        yield replace(job, zero_stage=stage, offload=True), f"training.deepspeed: {{stage: {stage}, offload: cpu}}", {
            "training.deepspeed.stage": stage, "training.deepspeed.offload": "cpu"}  # fmt: skip


def _nodes(job: PlanJob) -> Iterator[Candidate]:
    if not job.zero_stage:
        return
    for factor in (2, 4, 8, 16):
        nodes = job.nodes * factor
        if nodes <= 512:
            yield replace(job, nodes=nodes), f"resources.nodes: {job.nodes} -> {nodes}", {"resources.nodes": nodes}


def _lora(job: PlanJob) -> Iterator[Candidate]:
    if job.lora is None:
        yield replace(job, lora=Lora(16, ("all-linear",))), "model.lora: {r: 16, targetModules: [all-linear]}", {
            "model.lora.r": 16, "model.lora.targetModules": ["all-linear"]}  # fmt: skip


TRAINING_CHANGES: tuple[Callable[[PlanJob], Iterator[Candidate]], ...] = (
    _batch, _checkpointing, _zero, _offload, _nodes, _lora)  # fmt: skip


def _reference_batch(job: PlanJob) -> Iterator[Candidate]:
    """Halve the reference pass's batch (its budget of batchSize x maxLength tokens), dropping tokensPerBatch."""
    batch = job.reference_batch
    dropped = ", without tokensPerBatch" if job.reference_tokens else ""
    while batch > 1:
        batch //= 2
        yield replace(job, reference_batch=batch, reference_tokens=None), (
            f"reference.batchSize {job.reference_batch} -> {batch}{dropped}"), {
            "reference.batchSize": batch, "reference.tokensPerBatch": None}  # fmt: skip


def suggest(job: PlanJob, phase: str, total_of: Callable[[PlanJob], int], memory: int) -> tuple[Suggestion, ...]:
    """Suggestions for ``phase`` (``train`` or ``precompute``), whose per-device total ``total_of`` computes."""
    changes = TRAINING_CHANGES if phase == "train" else (_reference_batch,)
    found: list[Suggestion] = []
    for change in changes:
        for new, text, fields in change(job):
            total = total_of(new)
            if total <= memory:
                found.append(Suggestion(text, fields, phase, total, True))
                break
    if found:
        return tuple(found)
    return (_combined(job, phase, changes, total_of, memory),)


def _combined(
    job: PlanJob,
    phase: str,
    changes: tuple[Callable[[PlanJob], Iterator[Candidate]], ...],
    total_of: Callable[[PlanJob], int],
    memory: int,
) -> Suggestion:
    """Every change in turn (each at its furthest), until the job fits or none is left."""
    texts: list[str] = []
    fields: dict[str, Any] = {}
    current, total = job, total_of(job)
    for change in changes:
        last = None
        for candidate in change(current):
            last = candidate
            if total_of(candidate[0]) <= memory:
                break
        if last is None:
            continue
        current, text, new_fields = last
        texts.append(text)
        fields.update(new_fields)
        total = total_of(current)
        if total <= memory:
            break
    return Suggestion("; ".join(texts), fields, phase, total, total <= memory)
