"""A plan as the JSON document ``prefops-trainer plan --output json`` prints (its keys are stable: docs/planner.md
lists them) and as the table it prints by default. Pure."""

from __future__ import annotations

from typing import Any

from . import Plan
from .job import format_bytes
from .phases import COMPONENTS, PhasePlan

#: the document's version: a key is added in a new minor version, never renamed or removed
SCHEMA = "prefops.dev/plan/v1"


def to_document(plan: Plan) -> dict[str, Any]:
    """The plan as a JSON-ready dict: ``fits``, ``headroomBytes``, ``device``, ``model``, ``phases`` (each with
    ``perDevice.totalBytes``, ``perDevice.components``, ``hostBytes``, ``diskBytes``), ``suggestions``, ``notes``."""
    job = plan.job
    return {
        "schema": SCHEMA,
        "fits": plan.fits,
        "headroomBytes": plan.headroom,
        "device": {
            "kind": "gpu" if job.gpu else "cpu",
            "memoryBytes": plan.memory,
            "memorySource": plan.memory_source,
            "dtype": job.compute_dtype,
        },
        "model": {
            "type": plan.shape.model_type,
            "parameters": plan.shape.params,
            "trainableParameters": plan.trainable,
        },
        "phases": {p.name: _phase(plan, p) for p in plan.phases},
        "suggestions": [
            {"change": s.change, "fields": s.fields, "phase": s.phase, "totalBytes": s.total, "fits": s.fits}
            for s in plan.suggestions
        ],
        "notes": list(plan.notes),
    }


def _phase(plan: Plan, phase: PhasePlan) -> dict[str, Any]:
    device = phase.device
    return {
        "pods": phase.pods,
        "processesPerPod": phase.processes,
        "gpusPerPod": phase.gpus,
        "fits": plan.fits_phase(phase),
        "perDevice": {
            "totalBytes": device.total if device else 0,
            "peakAt": device.peak_at if device else None,
            "components": dict(device.components) if device else {k: 0 for k in COMPONENTS},
        },
        "hostBytes": phase.host,
        "diskBytes": phase.disk,
        "cpu": cpu_quantity(phase.cpu),
    }


def cpu_quantity(millicores: int) -> str:
    """Millicores as a Kubernetes CPU quantity: ``8``, ``500m``."""
    return str(millicores // 1000) if millicores % 1000 == 0 else f"{millicores}m"


def table(plan: Plan) -> str:
    """The plan for a terminal: one column per phase, one row per component, the verdict and suggestions."""
    phases = plan.phases
    head = ["per device"] + [f"{p.name} ({p.pods} pod{'s' if p.pods > 1 else ''})" for p in phases]
    rows = [head]
    for key in COMPONENTS:
        values = [p.device.components[key] if p.device else 0 for p in phases]
        if any(values):
            rows.append([key] + [format_bytes(v) if v else "-" for v in values])
    rows.append(["total"] + [format_bytes(p.device.total) if p.device else "- (CPU)" for p in phases])
    rows.append(["peak at"] + [p.device.peak_at if p.device else "merge" for p in phases])
    rows.append(["per pod: host RAM"] + [format_bytes(p.host) for p in phases])
    rows.append(["per pod: disk (/cache)"] + [format_bytes(p.disk) for p in phases])
    rows.append(["per pod: CPUs"] + [cpu_quantity(p.cpu) for p in phases])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]  # fmt: skip
    return "\n".join([_title(plan), "", *lines, "", _verdict(plan), *_advice(plan), *_notes(plan)])


def _title(plan: Plan) -> str:
    job, shape = plan.job, plan.shape
    mode = f"LoRA r={job.lora.rank}" if job.lora else "full fine-tuning"
    ds = f"ZeRO-{job.zero_stage}{' + offload' if job.offload else ''}" if job.zero_stage else "no DeepSpeed"
    return (f"{job.algorithm} on {shape.model_type} ({shape.params / 1e9:.2f}B parameters, "
            f"{plan.trainable / 1e6:.1f}M trainable), {mode}, {job.compute_dtype}, {ds}, "
            f"{job.nodes}x{job.processes_per_node} processes, batch {job.batch}x{job.accumulation}, "
            f"maxLength {job.max_length}")  # fmt: skip


def _verdict(plan: Plan) -> str:
    peak = plan.peak
    total = format_bytes(peak.device.total) if peak.device else "?"
    if plan.fits is None:
        return f"verdict: unknown (no device memory to judge {total} per device against)"
    memory = format_bytes(plan.memory or 0)
    if plan.fits:
        headroom = format_bytes(plan.headroom or 0)
        return f"verdict: fits: {total} of {memory} per device ({plan.memory_source}), headroom {headroom}"
    return f"verdict: does NOT fit: {total} needed per device in {peak.name}, {memory} available ({plan.memory_source})"


def _advice(plan: Plan) -> list[str]:
    if not plan.suggestions:
        return []
    out = ["", "changes, each planned again:"]
    for s in plan.suggestions:
        state = "fits" if s.fits else "still does not fit"
        out.append(f"  - {s.change}: {format_bytes(s.total)} per device in {s.phase} ({state})")
    return out


def _notes(plan: Plan) -> list[str]:
    return ["", *(f"note: {n}" for n in plan.notes)] if plan.notes else []
