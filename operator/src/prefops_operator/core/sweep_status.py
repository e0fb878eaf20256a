"""The sweep's ``status`` (frozen objects with a lossless round trip to the API's JSON), and what the operator keeps
of each observed trial job. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from .evaluation import Evaluation
from .rules.sweep_spec import is_number
from .rules.trials import LABEL_TRIAL, TrialRow
from .status import Condition
from .timefmt import format_time, parse_time


class SweepPhase(str, Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def finished(self) -> bool:
        return self in (SweepPhase.SUCCEEDED, SweepPhase.FAILED)


#: A trial not created yet. Once created, a trial's phase is its job's ``status.phase``.
WAITING = "Waiting"
ACTIVE = ("Pending", "Precomputing", "Training", "Exporting")
FINISHED = ("Succeeded", "Failed")
TRIAL_PHASES = (WAITING, *ACTIVE, "Suspended", *FINISHED)
#: Job phases after the precompute phase: a trial there has the reference cache its group needs.
PAST_PRECOMPUTE = ("Training", "Exporting", "Succeeded")


@dataclass(frozen=True)
class TrialRecord(TrialRow):
    """One row of ``status.trials`` (its keys: :class:`.rules.trials.TrialRow`), ``Waiting`` until its job exists."""

    phase: str = WAITING

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    def to_dict(self) -> dict[str, Any]:
        return _compact(super().to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialRecord:
        params = d.get("parameters")
        hit = d.get("cacheHit")
        return cls(
            name=str(d.get("name") or ""),
            index=_int(d.get("index")) or 0,
            parameters=dict(params) if isinstance(params, Mapping) else {},
            phase=str(d.get("phase")) if d.get("phase") in TRIAL_PHASES else WAITING,
            output=d.get("output"),
            objective=float(d["objective"]) if is_number(d.get("objective")) else None,
            step=_int(d.get("step")),
            cache_hit=hit if isinstance(hit, bool) else None,
            message=d.get("message"),
        )


@dataclass(frozen=True)
class Best:
    """The succeeded trial with the best objective value (ties: the first trial)."""

    trial: str
    objective: float
    parameters: Mapping[str, Any]
    output: str | None

    def to_dict(self) -> dict[str, Any]:
        params = dict(self.parameters)
        return _compact({"trial": self.trial, "objective": self.objective, "parameters": params, "output": self.output})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Best | None:
        if not isinstance(d.get("trial"), str) or not is_number(d.get("objective")):
            return None
        params = d.get("parameters")
        parameters = dict(params) if isinstance(params, Mapping) else {}
        return cls(d["trial"], float(d["objective"]), parameters, d.get("output"))


@dataclass(frozen=True)
class Counts:
    total: int = 0
    waiting: int = 0
    running: int = 0
    suspended: int = 0
    succeeded: int = 0
    failed: int = 0

    @classmethod
    def of(cls, trials: tuple[TrialRecord, ...]) -> Counts:
        phases = [t.phase for t in trials]
        return cls(
            total=len(phases),
            waiting=phases.count(WAITING),
            running=sum(p in ACTIVE for p in phases),
            suspended=phases.count("Suspended"),
            succeeded=phases.count("Succeeded"),
            failed=phases.count("Failed"),
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class SweepStatus:
    phase: SweepPhase = SweepPhase.PENDING
    trials: tuple[TrialRecord, ...] = ()
    best: Best | None = None
    conditions: tuple[Condition, ...] = ()
    observed_generation: int | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None

    @property
    def counts(self) -> Counts:
        return Counts.of(self.trials)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def to_dict(self) -> dict[str, Any]:
        return _compact(
            {
                "phase": self.phase.value,
                "trials": [t.to_dict() for t in self.trials] or None,
                "best": self.best.to_dict() if self.best else None,
                "counts": self.counts.to_dict() if self.trials else None,
                "conditions": [c.to_dict() for c in self.conditions] or None,
                "observedGeneration": self.observed_generation,
                "startTime": format_time(self.start_time),
                "completionTime": format_time(self.completion_time),
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> SweepStatus:
        d = d or {}
        try:
            phase = SweepPhase(d.get("phase") or SweepPhase.PENDING.value)
        except ValueError:
            phase = SweepPhase.PENDING
        return cls(
            phase=phase,
            trials=tuple(TrialRecord.from_dict(t) for t in d.get("trials") or () if isinstance(t, Mapping)),
            best=Best.from_dict(d["best"]) if isinstance(d.get("best"), Mapping) else None,
            conditions=tuple(Condition.from_dict(c) for c in d.get("conditions") or () if isinstance(c, Mapping)),
            observed_generation=_int(d.get("observedGeneration")),
            start_time=parse_time(d.get("startTime")),
            completion_time=parse_time(d.get("completionTime")),
        )


@dataclass(frozen=True)
class TrialView:
    """A trial job as last observed: what the sweep reads from it."""

    name: str
    owner_uid: str | None
    phase: str
    suspend: bool
    precompute_done: bool
    cache_hit: bool | None = None
    evaluation: Evaluation | None = None
    message: str | None = None
    terminating: bool = False
    index: int | None = field(default=None, compare=False)


def trial_view(body: Mapping[str, Any]) -> TrialView:
    """Build a :class:`TrialView` from a PreferenceTrainingJob object."""
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    owners = [o for o in meta.get("ownerReferences") or () if o.get("controller")]
    precompute = (status.get("phases") or {}).get("precompute") or {}
    failed: Mapping[str, Any] = next((c for c in status.get("conditions") or () if c.get("type") == "Failed"), {})
    evaluation = status.get("evaluation")
    hit = precompute.get("cacheHit")
    return TrialView(
        name=str(meta.get("name")),
        owner_uid=owners[0].get("uid") if owners else None,
        phase=str(status.get("phase") or "Pending"),
        suspend=spec.get("suspend") is True,
        precompute_done=precompute.get("completionTime") is not None,
        cache_hit=hit if isinstance(hit, bool) else None,
        evaluation=Evaluation.from_dict(evaluation) if isinstance(evaluation, Mapping) else None,
        message=(str(failed.get("message") or "")[:1000] or None) if failed.get("status") == "True" else None,
        terminating=meta.get("deletionTimestamp") is not None,
        index=_int(_label_int((meta.get("labels") or {}).get(LABEL_TRIAL))),
    )


def _label_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != ""}


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
