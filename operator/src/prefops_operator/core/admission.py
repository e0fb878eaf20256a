"""Admission: will the job fit? The memory plan made before any pod exists, and the pod sizes it leads to. Pure.

The reconciler gathers what the plan reads (:class:`PlanSources`: the model's ``config.json`` from a ConfigMap or
the Hub, the GPUs' memory from the spec or a node label) and :func:`admit` plans with the planner the trainer's
``prefops-trainer plan`` runs (``core/planner``, a generated copy). The verdict becomes the ``Feasible`` condition:

- ``True``, reason ``Fits``: every phase fits its devices;
- ``False``, reason ``WontFit``: a phase does not; with ``spec.resources.fitCheck: enforce`` (the default) the job
  fails with reason WontFit before any pod is created, its message naming the changes that would make it fit;
- ``Unknown``, reason ``PlanSkipped``: no config.json, no device memory, or a config the planner cannot read; the
  message says which, and the job runs.

The plan's summary goes to ``status.plan``, where each phase's pods find their memory and CPU requests and their
``/cache`` size (:func:`pod_sizing`), so a pod created after an operator restart is sized as its siblings were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import planner
from .planner.job import format_bytes
from .planner.render import cpu_quantity

REASON_FITS, REASON_WONT_FIT, REASON_SKIPPED = "Fits", "WontFit", "PlanSkipped"
#: what a pod requests when there is no plan and the spec sets nothing: never BestEffort
FLOOR = {"cpu": "250m", "memory": "2Gi"}
#: how many of the peak phase's components the condition and status name
LARGEST = 3


@dataclass(frozen=True)
class PlanSources:
    """What the plan reads besides the spec, as the reconciler found it. ``missing`` says why the model's config is
    absent; ``memory_missing`` why no device memory is known."""

    model_config: Mapping[str, Any] | None
    reward_config: Mapping[str, Any] | None = None
    memory: int | None = None
    memory_source: str | None = None
    missing: str | None = None
    memory_missing: str | None = None


@dataclass(frozen=True)
class Admission:
    """The verdict: the Feasible condition's status, reason and message, and ``status.plan``."""

    status: str
    reason: str
    message: str
    summary: Mapping[str, Any]
    enforce: bool

    @property
    def wont_fit(self) -> bool:
        return self.status == "False"


def enforced(spec: Mapping[str, Any]) -> bool:
    resources = spec.get("resources")
    return not isinstance(resources, Mapping) or resources.get("fitCheck") != "warn"


def admit(spec: Mapping[str, Any], sources: PlanSources) -> Admission:
    """Plan the job whose stored ``spec`` (CRD defaults applied) is given, from ``sources``."""
    enforce = enforced(spec)
    if sources.model_config is None:
        why = sources.missing or "the model's config.json was not read"
        return Admission("Unknown", REASON_SKIPPED, f"no memory plan: {why}", {"skipped": why}, enforce)
    try:
        result = planner.plan(
            spec,
            sources.model_config,
            reward_config=sources.reward_config,
            gpu_memory=sources.memory,
            memory_source=sources.memory_source,
        )
    except (planner.PlanInputError, planner.ModelConfigError) as e:
        return Admission("Unknown", REASON_SKIPPED, f"no memory plan: {e}", {"skipped": str(e)}, enforce)
    return _verdict(result, sources, enforce)


def _verdict(result: planner.Plan, sources: PlanSources, enforce: bool) -> Admission:
    doc = summary(result)
    peak = result.peak
    total = format_bytes(peak.device.total) if peak.device else "0"
    largest = ", ".join(doc["largest"])
    if result.fits is None:
        if not result.job.gpu:
            pods = ", ".join(
                f"{p.name} {v['memory']}" for p, v in zip(result.phases, doc["phases"].values(), strict=True)
            )
            message = f"a CPU-only job, no GPU memory to judge: its pods request the plan's host memory ({pods})"
        else:
            why = sources.memory_missing or "no device memory is known"
            message = f"planned {total} per device in {peak.name} ({largest}); no verdict: {why}"
        return Admission("Unknown", REASON_SKIPPED, message, doc, enforce)
    memory = f"{format_bytes(result.memory or 0)} ({result.memory_source})"
    if result.fits:
        message = f"planned {total} per device in {peak.name} of {memory}: fits ({largest})"
        return Admission("True", REASON_FITS, message, doc, enforce)
    changes = "; or ".join(doc["suggestions"]) or "none found"
    message = (f"planned {total} per device in {peak.name}, more than {memory} ({largest}). "
               f"To make it fit: {changes}")  # fmt: skip
    return Admission("False", REASON_WONT_FIT, message, doc, enforce)


def summary(result: planner.Plan) -> dict[str, Any]:
    """``status.plan``: the peak, the verdict, the largest components, suggestions, and per phase what a pod needs."""
    peak = result.peak
    total = peak.device.total if peak.device else 0
    parts = sorted(peak.device.components.items(), key=lambda kv: -kv[1]) if peak.device else []
    doc: dict[str, Any] = {
        "perDevice": format_bytes(total),
        "perDeviceBytes": total,
        "peakPhase": peak.name,
        "largest": [f"{k} {format_bytes(v)}" for k, v in parts[:LARGEST] if v],
        "suggestions": [f"{s.change} ({format_bytes(s.total)} per device)" for s in result.suggestions if s.fits]
        or [f"{s.change} ({format_bytes(s.total)} per device, still too much)" for s in result.suggestions],
        "phases": {p.name: _phase(p) for p in result.phases},
    }
    if result.memory is not None:
        doc["deviceMemory"] = format_bytes(result.memory)
        doc["deviceMemorySource"] = result.memory_source
    if result.fits is not None:
        doc["fits"] = result.fits
    return doc


def _phase(phase: planner.PhasePlan) -> dict[str, str]:
    out = {"memory": _quantity(phase.host), "cpu": cpu_quantity(phase.cpu), "cache": _quantity(phase.disk)}
    if phase.device is not None:
        out["perDevice"] = format_bytes(phase.device.total)
    return out


def _quantity(n: int) -> str:
    """Bytes as a Kubernetes quantity, rounded up to whole Gi (Mi below 1Gi)."""
    gib, mib = 2**30, 2**20
    return f"{-(-n // gib)}Gi" if n >= gib else f"{max(-(-n // mib), 1)}Mi"


@dataclass(frozen=True)
class PodSizing:
    """What one phase's pods request when the spec sets nothing (``requests``), and their ``/cache`` size limit
    (``cache``, None: the operator's --cache-size-limit)."""

    requests: Mapping[str, str]
    cache: str | None


def pod_sizing(plan: Mapping[str, Any] | None, phase: str) -> PodSizing:
    """Phase ``phase``'s pods' sizes from ``status.plan``; the floor when there is no plan for it."""
    phases = plan.get("phases") if isinstance(plan, Mapping) else None
    mine = phases.get(phase) if isinstance(phases, Mapping) else None
    if not isinstance(mine, Mapping) or not all(isinstance(mine.get(k), str) for k in ("memory", "cpu", "cache")):
        return PodSizing(FLOOR, None)
    return PodSizing({"cpu": mine["cpu"], "memory": mine["memory"]}, mine["cache"])
