"""The job's phase state machine: ``decide(previous, observed, now) -> Decision``. Pure.

Each reconcile first *classifies* what it observes into at most one :class:`Happening` (the current phase's
pod group succeeded, a pod failed, the deadline passed, the user suspended the job, ...), then looks the
(phase, happening) pair up in :data:`TRANSITIONS`, a table of data, and builds the next status. With nothing
happening, the status only refreshes (progress, observedGeneration). The caller writes the status and then
makes the children match it (:mod:`.plan`); it never reacts to status changes, only to observations.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from .algorithms import ALGORITHMS
from .conditions import RUNNING_REASON, STARTED_REASON, ConditionType, FailureReason, Reason
from .evaluation import GATE_NOT_MET_EXIT_CODE, Evaluation, final_evaluation, gate_message
from .naming import PodPhase
from .pods import PodView
from .refusals import Refusal
from .spec import Job, JobSpec
from .status import PHASE_KEYS, RUNNING_PHASES, Condition, Failure, Phase, PhaseTimes, Progress, Status
from .validation import semantic_problems

PERMANENT_EXIT_CODE = 2  # the trainer's "your input is wrong" (docs/contract.md §4)


class Happening(str, Enum):
    START = "Start"
    INVALID_SPEC = "InvalidSpec"
    GROUP_SUCCEEDED = "GroupSucceeded"
    GROUP_FAILED = "GroupFailed"
    BACKOFF_EXHAUSTED = "BackoffExhausted"
    INVALID_INPUT = "InvalidInput"
    GATE_NOT_MET = "GateNotMet"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    SUSPEND = "Suspend"
    RESUME = "Resume"
    CREATE_REFUSED = "CreateRefused"  # the apiserver refused a child, and retrying cannot help


#: the Failed condition's reason for each happening that fails a job
FAILURE_REASONS: Mapping[Happening, Reason] = {
    Happening.INVALID_SPEC: Reason.INVALID_SPEC,
    Happening.INVALID_INPUT: Reason.INVALID_INPUT,
    Happening.BACKOFF_EXHAUSTED: Reason.BACKOFF_LIMIT_EXCEEDED,
    Happening.DEADLINE_EXCEEDED: Reason.DEADLINE_EXCEEDED,
    Happening.GATE_NOT_MET: Reason.GATE_NOT_MET,
}


class Target(str, Enum):
    NEXT = "next"  # the first unfinished phase of the job's plan (Succeeded when none is left)
    RESTART = "restart"  # the same phase, with a new pod group (restarts + 1)
    FAILED = "failed"
    SUSPENDED = "suspended"


def _running(happening: Happening, target: Target) -> dict[tuple[Phase, Happening], Target]:
    return {(phase, happening): target for phase in RUNNING_PHASES}


#: (phase, what happened) -> where the job goes. Pairs not in the table change nothing.
TRANSITIONS: Mapping[tuple[Phase, Happening], Target] = {
    (Phase.PENDING, Happening.INVALID_SPEC): Target.FAILED,
    (Phase.PENDING, Happening.SUSPEND): Target.SUSPENDED,
    (Phase.PENDING, Happening.START): Target.NEXT,
    **_running(Happening.GROUP_SUCCEEDED, Target.NEXT),
    **_running(Happening.GROUP_FAILED, Target.RESTART),
    **_running(Happening.BACKOFF_EXHAUSTED, Target.FAILED),
    **_running(Happening.INVALID_INPUT, Target.FAILED),
    **_running(Happening.GATE_NOT_MET, Target.FAILED),
    **_running(Happening.INVALID_SPEC, Target.FAILED),
    **_running(Happening.DEADLINE_EXCEEDED, Target.FAILED),
    **_running(Happening.CREATE_REFUSED, Target.FAILED),
    **_running(Happening.SUSPEND, Target.SUSPENDED),
    (Phase.SUSPENDED, Happening.RESUME): Target.NEXT,
}


@dataclass(frozen=True)
class Observed:
    """Everything a decision depends on besides the previous status and the clock.

    ``spec`` is ``None`` when the job's spec could not be parsed (``spec_error`` says why). ``pods`` are the pods
    the job controls (owner reference with its uid). ``refusal`` is why the apiserver refused the last child built
    from the spec (an invalid toleration, a quota, a missing ServiceAccount, ...) or why a name is taken.
    ``progress`` and ``evaluation`` are the latest sample of the trainer's metrics, if one was taken.
    """

    job: Job | None
    pods: Sequence[PodView] = ()
    spec_error: str | None = None
    refusal: Refusal | None = None
    progress: Progress | None = None
    evaluation: Evaluation | None = None

    @property
    def spec(self) -> JobSpec | None:
        return self.job.spec if self.job else None


@dataclass(frozen=True)
class Transition:
    """One change of phase (or a restart within one), for Events and metrics."""

    source: Phase
    target: Phase
    reason: Reason
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Notice:
    """Something to tell the user with an Event that changes no phase (a refused create being retried)."""

    reason: Reason
    message: str
    warning: bool = True


@dataclass(frozen=True)
class Decision:
    status: Status
    transitions: tuple[Transition, ...] = ()
    wake_at: datetime | None = None  # the earliest time a deadline may change the decision
    notices: tuple[Notice, ...] = ()


@dataclass(frozen=True)
class _Finding:
    happening: Happening
    message: str = ""
    failure: Failure | None = None
    reason: Reason | None = None  # the Failed reason, when not the happening's own


# -- public entry point ----------------------------------------------------------------------------------------


def decide(previous: Status, observed: Observed, now: datetime) -> Decision:
    """The job's next status given its previous status and what was observed at ``now``."""
    decision = _decide(previous, observed, now)
    before, after = (
        previous.condition(ConditionType.REPLICA_FAILURE),
        decision.status.condition(ConditionType.REPLICA_FAILURE),
    )
    if after and (before is None or (before.reason, before.message) != (after.reason, after.message)):
        return replace(decision, notices=(Notice(Reason(after.reason), after.message),))
    return decision


def _decide(previous: Status, observed: Observed, now: datetime) -> Decision:
    spec = observed.spec
    if spec is None:
        if previous.phase == Phase.PENDING and observed.spec_error:
            return _apply(previous, _Finding(Happening.INVALID_SPEC, observed.spec_error), observed, now)
        return Decision(previous)
    finding = _classify(previous, observed, spec, now)
    if finding is None:
        status = _refresh(previous, observed, spec, now)
        return Decision(status, (), _wake_at(status, observed, spec))
    return _apply(previous, finding, observed, now)


def phase_plan(spec: JobSpec) -> tuple[Phase, ...]:
    """The running phases of the job, in order: precompute only for reference-based losses (or when asked)."""
    rule = ALGORITHMS.get(spec.algorithm.name)
    precompute = spec.reference.precompute
    if precompute is None:
        precompute = bool(rule and rule.reference_based)
    return (Phase.PRECOMPUTING, Phase.TRAINING, Phase.EXPORTING) if precompute else (Phase.TRAINING, Phase.EXPORTING)


def group_size(spec: JobSpec, phase: PodPhase) -> int:
    """How many pods a phase's group has."""
    return {PodPhase.PRECOMPUTE: spec.reference.workers, PodPhase.TRAIN: spec.resources.nodes}.get(phase, 1)


def current_group(status: Status, pods: Sequence[PodView]) -> list[PodView]:
    """The pods of the running phase's current attempt that are not being deleted, by replica index."""
    pod_phase = status.phase.pod_phase
    group = [p for p in pods if p.phase == pod_phase and p.attempt == status.attempt and not p.terminating]
    return sorted(group, key=lambda p: p.index)


# -- classification --------------------------------------------------------------------------------------------


def _classify(previous: Status, observed: Observed, spec: JobSpec, now: datetime) -> _Finding | None:
    phase = previous.phase
    if phase == Phase.PENDING:
        problems = semantic_problems(spec)
        if problems:
            return _Finding(Happening.INVALID_SPEC, "; ".join(problems))
        return _Finding(Happening.SUSPEND if spec.suspend else Happening.START)
    if phase == Phase.SUSPENDED:
        return None if spec.suspend else _Finding(Happening.RESUME)
    if phase.finished:
        return None
    return _classify_running(previous, observed, spec, now)


def _classify_running(previous: Status, observed: Observed, spec: JobSpec, now: datetime) -> _Finding | None:
    refusal = observed.refusal
    if refusal and refusal.permanent:
        return _Finding(Happening.CREATE_REFUSED, refusal.message, reason=refusal.reason)
    deadline = _active_deadline(previous, spec)
    if deadline is not None and now >= deadline:
        return _Finding(
            Happening.DEADLINE_EXCEEDED,
            f"the job ran longer than activeDeadlineSeconds ({spec.active_deadline_seconds}s)",
        )
    pod_phase = previous.phase.pod_phase
    assert pod_phase is not None
    group = current_group(previous, observed.pods)
    failures = _failures(group, spec, now) + _lost(previous, observed.pods, now)
    gate = next((f for f in failures if f.exit_code == GATE_NOT_MET_EXIT_CODE), None)
    if gate is not None and pod_phase == PodPhase.EXPORT:  # it refused to publish (docs/contract.md §8): permanent
        return _Finding(Happening.GATE_NOT_MET, gate_message(gate.message, spec.gate, spec.output_uri), gate)
    permanent = [f for f in failures if f.exit_code == PERMANENT_EXIT_CODE]
    if permanent:
        return _Finding(Happening.INVALID_INPUT, permanent[0].describe(), permanent[0])
    size = group_size(spec, pod_phase)
    if not failures and sorted(p.index for p in group if p.succeeded) == list(range(size)):
        return _Finding(Happening.GROUP_SUCCEEDED)
    if spec.suspend:
        return _Finding(Happening.SUSPEND)
    if failures:
        exhausted = previous.restarts >= spec.backoff_limit
        return _Finding(
            Happening.BACKOFF_EXHAUSTED if exhausted else Happening.GROUP_FAILED, failures[0].describe(), failures[0]
        )
    return None


def _failures(group: Sequence[PodView], spec: JobSpec, now: datetime) -> list[Failure]:
    """Failed pods (earliest first) and pods stuck before running past the startup deadline."""
    failed = sorted((p for p in group if p.failed), key=lambda p: (p.finished or now, p.index))
    found = [
        Failure(p.name, p.phase.value, p.reason or FailureReason.FAILED, p.exit_code, p.message or "", now)
        for p in failed
    ]
    limit = timedelta(seconds=spec.startup_deadline_seconds)
    for p in group:
        if not p.started and p.created is not None and now - p.created >= limit:
            why = f"{p.waiting_reason}: {p.waiting_message}" if p.waiting_message else p.waiting_reason or "Pending"
            message = f"not running {spec.startup_deadline_seconds}s after creation ({why})"
            found.append(Failure(p.name, p.phase.value, FailureReason.STARTUP_DEADLINE_EXCEEDED, None, message, now))
    return found


def _lost(status: Status, pods: Sequence[PodView], now: datetime) -> list[Failure]:
    """Pods of the running group being deleted by someone else (preemption, a drained node, kubectl): the operator
    never deletes a pod of the current attempt while its phase runs, so each is a lost rank. Pods created before
    the job (re)started are the ones a suspension deleted, still terminating after a quick resume."""
    since = status.start_time
    lost = [
        p
        for p in pods
        if p.phase == status.phase.pod_phase
        and p.attempt == status.attempt
        and p.terminating
        and not p.finished_or_failed
        and since is not None
        and p.created is not None
        and p.created >= since
    ]
    return [Failure(p.name, p.phase.value, FailureReason.DELETED, None, "deleted while running", now) for p in lost]


def _active_deadline(status: Status, spec: JobSpec) -> datetime | None:
    if spec.active_deadline_seconds is None or status.start_time is None:
        return None
    return status.start_time + timedelta(seconds=spec.active_deadline_seconds)


# -- applying a transition -------------------------------------------------------------------------------------


def _apply(previous: Status, finding: _Finding, observed: Observed, now: datetime) -> Decision:
    target = TRANSITIONS.get((previous.phase, finding.happening))
    if target is None:  # not a transition from this phase: nothing changes
        return Decision(previous)
    spec = observed.spec
    base = _refresh(previous, observed, spec, now) if spec else previous
    if target == Target.FAILED:
        status, transition = _fail(base, finding, now)
    elif target == Target.SUSPENDED:
        status, transition = _suspend(base, now)
    elif target == Target.RESTART:
        assert spec is not None
        status, transition = _restart(base, finding, spec, now)
    else:
        assert spec is not None
        status, transition = _advance(base, finding, observed, spec, now)
    return Decision(status, (transition,), _wake_at(status, observed, spec) if spec else None)


def _advance(
    base: Status, finding: _Finding, observed: Observed, spec: JobSpec, now: datetime
) -> tuple[Status, Transition]:
    phases = dict(base.phases)
    if base.phase in RUNNING_PHASES:
        key = PHASE_KEYS[base.phase]
        done = replace(phases.get(key, PhaseTimes()), completion_time=now)
        if base.phase == Phase.PRECOMPUTING:
            done = replace(done, cache_hit=_cache_hit(current_group(base, observed.pods)))
        if base.phase == Phase.TRAINING:
            done = replace(done, prefix_sharing=_prefix_sharing(current_group(base, observed.pods)))
            base = replace(base, evaluation=_final_evaluation(base, observed, spec))
        phases[key] = done
    nxt = next(
        (p for p in phase_plan(spec) if phases.get(PHASE_KEYS[p], PhaseTimes()).completion_time is None),
        Phase.SUCCEEDED,
    )
    status = replace(base, phase=nxt, phases=phases)
    if finding.happening in (Happening.START, Happening.RESUME):
        status = replace(status, start_time=now)  # the activeDeadlineSeconds clock (re)starts
    if nxt == Phase.SUCCEEDED:
        message = f"model written to {spec.output_uri}"
        status = replace(
            status,
            output_uri=spec.output_uri,
            completion_time=now,
            conditions=_conditions(
                base.conditions,
                now,
                {
                    ConditionType.RUNNING: ("False", Reason.SUCCEEDED, message),
                    ConditionType.SUCCEEDED: ("True", Reason.EXPORTED, message),
                },
            ),
        )
        return status, Transition(base.phase, nxt, Reason.SUCCEEDED, message)
    key = PHASE_KEYS[nxt]
    if phases.get(key, PhaseTimes()).start_time is None:
        phases[key] = replace(phases.get(key, PhaseTimes()), start_time=now)
    message = _running_message(nxt, spec)
    updates = {ConditionType.RUNNING: ("True", RUNNING_REASON[nxt], message)}
    if base.condition(ConditionType.SUSPENDED):
        updates[ConditionType.SUSPENDED] = ("False", Reason.RESUMED, "spec.suspend is false")
    reason = Reason.RESUMED if finding.happening == Happening.RESUME else STARTED_REASON[nxt]
    status = replace(status, phases=phases, conditions=_conditions(base.conditions, now, updates))
    return status, Transition(base.phase, nxt, reason, message)


def _restart(base: Status, finding: _Finding, spec: JobSpec, now: datetime) -> tuple[Status, Transition]:
    restarts = base.restarts + 1
    message = (
        f"{finding.message}; recreating the {base.phase.value.lower()} pod group "
        f"(restart {restarts} of {spec.backoff_limit})"
    )
    status = replace(
        base,
        restarts=restarts,
        last_failure=finding.failure,
        conditions=_conditions(
            base.conditions, now, {ConditionType.RUNNING: ("True", RUNNING_REASON[base.phase], message)}
        ),
    )
    return status, Transition(base.phase, base.phase, Reason.RESTARTING, message, warning=True)


def _fail(base: Status, finding: _Finding, now: datetime) -> tuple[Status, Transition]:
    reason = finding.reason or FAILURE_REASONS[finding.happening]
    message = finding.message
    if finding.happening == Happening.BACKOFF_EXHAUSTED:
        message = f"{finding.message}; backoffLimit ({base.restarts} restarts) exhausted"
    status = replace(
        base,
        phase=Phase.FAILED,
        completion_time=now,
        last_failure=finding.failure or base.last_failure,
        conditions=_conditions(
            base.conditions,
            now,
            {ConditionType.RUNNING: ("False", reason, message), ConditionType.FAILED: ("True", reason, message)},
        ),
    )
    return status, Transition(base.phase, Phase.FAILED, reason, message, warning=True)


def _suspend(base: Status, now: datetime) -> tuple[Status, Transition]:
    message = "spec.suspend is true: pods deleted, finished phases and checkpoints kept"
    status = replace(
        base,
        phase=Phase.SUSPENDED,
        conditions=_conditions(
            base.conditions,
            now,
            {
                ConditionType.RUNNING: ("False", Reason.SUSPENDED, message),
                ConditionType.SUSPENDED: ("True", Reason.SUSPENDED, message),
            },
        ),
    )
    return status, Transition(base.phase, Phase.SUSPENDED, Reason.SUSPENDED, message)


# -- helpers ---------------------------------------------------------------------------------------------------


def _refresh(previous: Status, observed: Observed, spec: JobSpec, now: datetime) -> Status:
    """The previous status with what is observed regardless of transitions: shape, generation, progress, and the
    ReplicaFailure condition while children are refused."""
    progress = previous.progress
    if observed.progress is not None:
        merged = (progress or Progress()).merged(observed.progress)
        if replace(merged, last_scrape_time=None) != replace(progress or Progress(), last_scrape_time=None):
            progress = merged  # a scrape that read the same numbers writes nothing
    evaluation = previous.evaluation
    if observed.evaluation is not None and observed.evaluation.newer_than(evaluation):
        evaluation = observed.evaluation
    meta = observed.job.meta if observed.job else None
    return replace(
        previous,
        shape=f"{spec.resources.nodes}x{spec.resources.gpus_per_node}",
        progress=progress,
        evaluation=evaluation,
        observed_generation=meta.generation if meta else previous.observed_generation,
        conditions=_replica_failure(previous, observed.refusal, now),
    )


def _replica_failure(previous: Status, refusal: Refusal | None, now: datetime) -> tuple[Condition, ...]:
    """The conditions with ReplicaFailure set while a retried refusal lasts in a running phase, else without it."""
    if refusal is None or refusal.permanent or previous.phase not in RUNNING_PHASES:
        return tuple(c for c in previous.conditions if c.type != ConditionType.REPLICA_FAILURE)
    update = {ConditionType.REPLICA_FAILURE: ("True", refusal.reason, refusal.message)}
    return _conditions(previous.conditions, now, update)


def _conditions(
    current: Sequence[Condition], now: datetime, updates: Mapping[ConditionType, tuple[str, Reason, str]]
) -> tuple[Condition, ...]:
    """``current`` with each named condition set to (status, reason, message); the transition time moves only
    when the status does."""
    out = {c.type: c for c in current}
    for type_, (status, reason, message) in updates.items():
        old = out.get(type_)
        since = now if old is None or old.status != status else old.last_transition_time
        out[type_] = Condition(type_, status, reason, message, since)
    order: list[str] = list(ConditionType)
    return tuple(sorted(out.values(), key=lambda c: order.index(c.type) if c.type in order else len(order)))


def _running_message(phase: Phase, spec: JobSpec) -> str:
    res = spec.resources
    if phase == Phase.PRECOMPUTING:
        return f"precomputing reference log-probs on {spec.reference.workers} pod(s)"
    if phase == Phase.TRAINING:
        return f"training {spec.algorithm.name} on {res.nodes} pod(s) x {res.gpus_per_node} GPU(s)"
    return f"merging and exporting to {spec.output_uri}"


def _first_message(group: Sequence[PodView]) -> dict[str, Any]:
    """Replica 0's termination message, when it is a JSON object (else empty)."""
    first = next((p for p in group if p.index == 0), None)
    if first is None or not first.message:
        return {}
    try:
        doc: Any = json.loads(first.message)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _cache_hit(group: Sequence[PodView]) -> bool | None:
    """Replica 0 of a finished precompute group reports a cache hit in its termination message, as JSON
    ``{"cacheHit": true}`` (docs/contract.md §4)."""
    hit = _first_message(group).get("cacheHit")
    return hit if isinstance(hit, bool) else None


#: The longest prefix-sharing verdict kept in status (the trainer's are one line, well under it).
PREFIX_SHARING_MAX = 300


def _prefix_sharing(group: Sequence[PodView]) -> str | None:
    """Replica 0 of a finished training group reports whether prefix sharing ran in its termination message:
    ``{"prefixSharing": "on" | "off: <reason>"}`` (docs/contract.md §7)."""
    shared = _first_message(group).get("prefixSharing")
    return shared[:PREFIX_SHARING_MAX] if isinstance(shared, str) and shared else None


def _final_evaluation(status: Status, observed: Observed, spec: JobSpec) -> Evaluation | None:
    """Replica 0 of a finished training group reports the final evaluation in its termination message
    (docs/contract.md §7); without one the last scraped evaluation stays."""
    first = next((p for p in current_group(status, observed.pods) if p.index == 0), None)
    rule = ALGORITHMS.get(spec.algorithm.name)
    final = final_evaluation(first.message if first else None, rule.eval_metrics if rule else ())
    return final or status.evaluation


def _wake_at(status: Status, observed: Observed, spec: JobSpec) -> datetime | None:
    """When a clock (not an observation) could next change the decision."""
    times: list[datetime] = []
    if status.phase in RUNNING_PHASES:
        deadline = _active_deadline(status, spec)
        if deadline:
            times.append(deadline)
        limit = timedelta(seconds=spec.startup_deadline_seconds)
        times.extend(p.created + limit for p in current_group(status, observed.pods) if not p.started and p.created)
    if status.phase.finished and status.completion_time and spec.ttl_seconds_after_finished is not None:
        times.append(status.completion_time + timedelta(seconds=spec.ttl_seconds_after_finished))
    return min(times, default=None)
