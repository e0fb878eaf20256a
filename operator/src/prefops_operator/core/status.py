"""The job's ``status``: frozen objects with a lossless round trip to and from the API's JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from .evaluation import Evaluation
from .phases import PHASES, PodPhase
from .phases import RUNNING_PHASES as RUNNING_PHASES
from .phases import Phase as Phase
from .timefmt import format_time, parse_time

#: status.phases key of each running phase: the name of the trainer phase its pods run (precompute, train, export)
PHASE_KEYS = {row.status: row.key for row in PHASES}
#: status.phases keys written by operator 0.1 -> today's key; read, and replaced by the next status write
LEGACY_PHASE_KEYS = {"training": PodPhase.TRAIN.value}


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str
    last_transition_time: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return _compact(
            {
                "type": self.type,
                "status": self.status,
                "reason": self.reason,
                "message": self.message,
                "lastTransitionTime": format_time(self.last_transition_time),
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Condition:
        return cls(
            str(d.get("type")),
            str(d.get("status", "Unknown")),
            str(d.get("reason") or ""),
            str(d.get("message") or ""),
            parse_time(d.get("lastTransitionTime")),
        )


@dataclass(frozen=True)
class PhaseTimes:
    """When a phase started and finished; ``attempt`` is the attempt whose pod group finished it (export reads the
    trained weights of the training attempt that succeeded: ``PREFOPS_TRAINED_ATTEMPT``)."""

    start_time: datetime | None = None
    completion_time: datetime | None = None
    cache_hit: bool | None = None
    attempt: int | None = None
    #: the train phase: "on", or "off: <reason>" (docs/contract.md §7)
    prefix_sharing: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _compact(
            {
                "startTime": format_time(self.start_time),
                "completionTime": format_time(self.completion_time),
                "cacheHit": self.cache_hit,
                "attempt": self.attempt,
                "prefixSharing": self.prefix_sharing,
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PhaseTimes:
        hit, shared = d.get("cacheHit"), d.get("prefixSharing")
        return cls(
            parse_time(d.get("startTime")),
            parse_time(d.get("completionTime")),
            hit if isinstance(hit, bool) else None,
            _int(d.get("attempt")),
            shared if isinstance(shared, str) else None,
        )


@dataclass(frozen=True)
class Progress:
    """Training progress read from the trainer's metrics (docs/contract.md §5)."""

    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    reward_accuracy: float | None = None
    pairs_done: int | None = None
    pairs_total: int | None = None
    last_scrape_time: datetime | None = None
    last_step_time: datetime | None = None  # when ``step`` was last seen to change: the progress deadline's clock

    @property
    def display(self) -> str | None:
        if self.step is not None and self.total_steps:
            return f"{self.step}/{self.total_steps}"
        if self.pairs_done is not None and self.pairs_total:
            return f"{self.pairs_done}/{self.pairs_total} pairs"
        return None

    def to_dict(self) -> dict[str, Any]:
        return _compact(
            {
                "display": self.display,
                "step": self.step,
                "totalSteps": self.total_steps,
                "epoch": self.epoch,
                "loss": self.loss,
                "rewardAccuracy": self.reward_accuracy,
                "pairsDone": self.pairs_done,
                "pairsTotal": self.pairs_total,
                "lastScrapeTime": format_time(self.last_scrape_time),
                "lastStepTime": format_time(self.last_step_time),
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Progress:
        return cls(
            _int(d.get("step")),
            _int(d.get("totalSteps")),
            _float(d.get("epoch")),
            _float(d.get("loss")),
            _float(d.get("rewardAccuracy")),
            _int(d.get("pairsDone")),
            _int(d.get("pairsTotal")),
            parse_time(d.get("lastScrapeTime")),
            parse_time(d.get("lastStepTime")),
        )

    def merged(self, newer: Progress) -> Progress:
        """This progress with every field ``newer`` knows replaced."""
        changes = {k: v for k, v in vars(newer).items() if v is not None}
        return replace(self, **changes)


@dataclass(frozen=True)
class Failure:
    pod: str
    phase: str
    reason: str
    exit_code: int | None
    message: str
    time: datetime | None

    def describe(self) -> str:
        code = "" if self.exit_code is None else f", exit code {self.exit_code}"
        text = f"pod {self.pod} failed ({self.reason}{code})"
        return f"{text}: {self.message}" if self.message else text

    def to_dict(self) -> dict[str, Any]:
        return _compact(
            {
                "pod": self.pod,
                "phase": self.phase,
                "reason": self.reason,
                "exitCode": self.exit_code,
                "message": self.message,
                "time": format_time(self.time),
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Failure:
        return cls(
            str(d.get("pod") or ""),
            str(d.get("phase") or ""),
            str(d.get("reason") or ""),
            _int(d.get("exitCode")),
            str(d.get("message") or ""),
            parse_time(d.get("time")),
        )


@dataclass(frozen=True)
class Restart:
    """One recreation of a phase's pod group: its ``kind`` (``Failure``, charged to ``backoffLimit``, or
    ``Disruption``, charged to ``disruptionLimit``), ``reason`` (``NodeLost``, ``OOMKilled``, ...), the pod and node
    that caused it, the ``attempt`` it started, when (``time``), the earliest time the new group is created
    (``not_before``: the backoff after a failure) and when every pod of the new group was first seen running
    (``resumed_time``)."""

    kind: str
    reason: str
    attempt: int
    pod: str
    node: str | None
    message: str
    time: datetime | None
    not_before: datetime | None = None
    resumed_time: datetime | None = None

    @property
    def resume_seconds(self) -> float | None:
        if self.time is None or self.resumed_time is None:
            return None
        return (self.resumed_time - self.time).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return _compact(
            {
                "kind": self.kind,
                "reason": self.reason,
                "attempt": self.attempt,
                "pod": self.pod,
                "node": self.node,
                "message": self.message,
                "time": format_time(self.time),
                "notBefore": format_time(self.not_before),
                "resumedTime": format_time(self.resumed_time),
                "resumeSeconds": None if self.resume_seconds is None else int(self.resume_seconds),
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Restart:
        return cls(
            kind=str(d.get("kind") or ""),
            reason=str(d.get("reason") or ""),
            attempt=_int(d.get("attempt")) or 0,
            pod=str(d.get("pod") or ""),
            node=d.get("node") or None,
            message=str(d.get("message") or ""),
            time=parse_time(d.get("time")),
            not_before=parse_time(d.get("notBefore")),
            resumed_time=parse_time(d.get("resumedTime")),
        )


@dataclass(frozen=True)
class Status:
    phase: Phase = Phase.PENDING
    shape: str | None = None
    conditions: tuple[Condition, ...] = ()
    phases: Mapping[str, PhaseTimes] = field(default_factory=dict)
    progress: Progress | None = None
    evaluation: Evaluation | None = None
    restarts: int = 0
    last_failure: Failure | None = None
    output_uri: str | None = None
    observed_generation: int | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    #: the current pod group's attempt: the ``PREFOPS_ATTEMPT`` of its pods and part of their names; one more at
    #: every restart and at every resume from suspension, never less
    attempt: int = 1
    failures: int = 0  # restarts charged to backoffLimit
    disruptions: int = 0  # restarts charged to disruptionLimit
    last_restart: Restart | None = None
    group_running_time: datetime | None = None  # when every pod of the current attempt was first seen running
    plan: Mapping[str, Any] | None = None  # the admission's memory plan (core.admission.summary)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def times(self, phase: Phase) -> PhaseTimes:
        return self.phases.get(PHASE_KEYS.get(phase, ""), PhaseTimes())

    def to_dict(self) -> dict[str, Any]:
        return _compact(
            {
                "phase": self.phase.value,
                "shape": self.shape,
                "conditions": [c.to_dict() for c in self.conditions] or None,
                "phases": {k: v.to_dict() for k, v in sorted(self.phases.items())} or None,
                "progress": (self.progress.to_dict() or None) if self.progress else None,
                "evaluation": self.evaluation.to_dict() if self.evaluation else None,
                "restarts": self.restarts,
                "lastFailure": self.last_failure.to_dict() if self.last_failure else None,
                "outputURI": self.output_uri,
                "observedGeneration": self.observed_generation,
                "startTime": format_time(self.start_time),
                "completionTime": format_time(self.completion_time),
                "attempt": self.attempt,
                "failures": self.failures,
                "disruptions": self.disruptions,
                "lastRestart": self.last_restart.to_dict() if self.last_restart else None,
                "groupRunningTime": format_time(self.group_running_time),
                "plan": dict(self.plan) if self.plan else None,
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Status:
        d = d or {}
        try:
            phase = Phase(d.get("phase") or Phase.PENDING.value)
        except ValueError:
            phase = Phase.PENDING
        return cls(
            phase=phase,
            shape=d.get("shape"),
            conditions=tuple(Condition.from_dict(c) for c in d.get("conditions") or () if isinstance(c, Mapping)),
            phases=_phases(d.get("phases")),
            progress=Progress.from_dict(d["progress"]) if isinstance(d.get("progress"), Mapping) else None,
            evaluation=Evaluation.from_dict(d["evaluation"]) if isinstance(d.get("evaluation"), Mapping) else None,
            restarts=_int(d.get("restarts")) or 0,
            last_failure=Failure.from_dict(d["lastFailure"]) if isinstance(d.get("lastFailure"), Mapping) else None,
            output_uri=d.get("outputURI"),
            observed_generation=_int(d.get("observedGeneration")),
            start_time=parse_time(d.get("startTime")),
            completion_time=parse_time(d.get("completionTime")),
            **_counts(d),
            last_restart=Restart.from_dict(d["lastRestart"]) if isinstance(d.get("lastRestart"), Mapping) else None,
            group_running_time=parse_time(d.get("groupRunningTime")),
            plan=dict(d["plan"]) if isinstance(d.get("plan"), Mapping) else None,
        )


def _counts(d: Mapping[str, Any]) -> dict[str, int]:
    """attempt, failures and disruptions; a status written before they existed counted every restart a failure,
    and its attempt was restarts + 1."""
    restarts = _int(d.get("restarts")) or 0
    disruptions = _int(d.get("disruptions")) or 0
    failures = _int(d.get("failures"))
    return {
        "attempt": _int(d.get("attempt")) or restarts + 1,
        "failures": restarts - disruptions if failures is None else failures,
        "disruptions": disruptions,
    }


def _phases(d: Any) -> dict[str, PhaseTimes]:
    """``status.phases``, with a legacy key read as today's (unless both are present)."""
    items = [(k, v) for k, v in d.items() if isinstance(v, Mapping)] if isinstance(d, Mapping) else []
    out = {LEGACY_PHASE_KEYS[k]: PhaseTimes.from_dict(v) for k, v in items if k in LEGACY_PHASE_KEYS}
    out.update((k, PhaseTimes.from_dict(v)) for k, v in items if k not in LEGACY_PHASE_KEYS)
    return out


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    """Without absent values; empty strings count as absent (the API round-trips "" unreliably: the test
    apiserver even decodes it as null)."""
    return {k: v for k, v in d.items() if v is not None and v != ""}


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
