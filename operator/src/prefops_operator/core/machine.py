"""The job's phase state machine: ``decide(previous, observed, now) -> Decision``. Pure.

Each reconcile first *classifies* what it observes into at most one :class:`Happening` (the current phase's
pod group succeeded, was disrupted or failed, the deadline passed, the user suspended the job, ...), then looks
the (phase, happening) pair up in :data:`TRANSITIONS`, a table of data, and builds the next status. With nothing
happening, the status only refreshes (progress, observedGeneration, what the job waits for). The caller writes the
status and then makes the children match it (:mod:`.plan`); it never reacts to status changes, only to
observations. What a pod group's pods say is sorted out in :mod:`.classify` (failures and disruptions,
:mod:`.restarts`), what the job waits for in :mod:`.waiting`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum

from .admission import Admission
from .classify import Judging, Scene, Verdict, judge, progress_deadline
from .conditions import ConditionType, Reason, RestartKind, set_conditions
from .evaluation import GATE_NOT_MET_EXIT_CODE, gate_message
from .observe import Observed, observe
from .phases import RUNNING_PHASES, Phase, PodPhase, group_size, phase_plan
from .refusals import Refusal
from .restarts import Cause
from .spec import JobSpec
from .status import Restart, Status
from .transitions import (
    FAILURE_REASONS,
    Finding,
    Happening,
    Transition,
    advance,
    current_group,
    fail,
    restart,
    suspend,
)
from .validation import semantic_problems
from .waiting import conditions as waiting_conditions
from .waiting import wake_times

__all__ = [
    "FAILURE_REASONS",
    "TRANSITIONS",
    "Decision",
    "Happening",
    "Observed",
    "Transition",
    "current_group",
    "decide",
    "group_size",
    "phase_plan",
]

PERMANENT_EXIT_CODE = 2  # the trainer's "your input is wrong" (docs/contract.md §4)


class Target(str, Enum):
    NEXT = "next"  # the first unfinished phase of the job's plan (Succeeded when none is left)
    RESTART = "restart"  # the same phase, with a new pod group (the next attempt)
    FAILED = "failed"
    SUSPENDED = "suspended"


def _running(happening: Happening, target: Target) -> dict[tuple[Phase, Happening], Target]:
    return {(phase, happening): target for phase in RUNNING_PHASES}


#: (phase, what happened) -> where the job goes. Pairs not in the table change nothing.
TRANSITIONS: Mapping[tuple[Phase, Happening], Target] = {
    (Phase.PENDING, Happening.INVALID_SPEC): Target.FAILED,
    (Phase.PENDING, Happening.WONT_FIT): Target.FAILED,
    (Phase.PENDING, Happening.SUSPEND): Target.SUSPENDED,
    (Phase.PENDING, Happening.START): Target.NEXT,
    **_running(Happening.GROUP_SUCCEEDED, Target.NEXT),
    **_running(Happening.GROUP_FAILED, Target.RESTART),
    **_running(Happening.GROUP_DISRUPTED, Target.RESTART),
    **_running(Happening.BACKOFF_EXHAUSTED, Target.FAILED),
    **_running(Happening.DISRUPTIONS_EXHAUSTED, Target.FAILED),
    **_running(Happening.INVALID_INPUT, Target.FAILED),
    **_running(Happening.GATE_NOT_MET, Target.FAILED),
    **_running(Happening.INVALID_SPEC, Target.FAILED),
    **_running(Happening.DEADLINE_EXCEEDED, Target.FAILED),
    **_running(Happening.CREATE_REFUSED, Target.FAILED),
    **_running(Happening.SUSPEND, Target.SUSPENDED),
    (Phase.SUSPENDED, Happening.RESUME): Target.NEXT,
}

#: conditions told with an Event when they appear or change (the Waiting condition only for these reasons, and
#: only when its reason changes: what it waits for, not how long)
NOTICED = (ConditionType.REPLICA_FAILURE, ConditionType.PODS_STUCK, ConditionType.SPEC_CHANGE_REFUSED)
WAITING_NOTICED = frozenset({Reason.UNSCHEDULABLE, Reason.POD_NOT_STARTED, Reason.NODE_NOT_READY})


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
    recovered: Restart | None = None  # the restart whose new group now runs in full


# -- public entry point ----------------------------------------------------------------------------------------


def decide(previous: Status, observed: Observed, now: datetime) -> Decision:
    """The job's next status given its previous status and what was observed at ``now``."""
    decision = _decide(previous, observed, now)
    notices = _notices(previous, decision.status) + _fit_warning(previous, observed.admission)
    if decision.recovered is not None:
        notices += (_recovered(decision.status, decision.recovered),)
    return replace(decision, notices=notices) if notices else decision


def _decide(previous: Status, observed: Observed, now: datetime) -> Decision:
    spec = observed.spec
    if spec is None:
        if previous.phase == Phase.PENDING and observed.spec_error:
            status, transition = fail(previous, Finding(Happening.INVALID_SPEC, observed.spec_error), now)
            return Decision(status, (transition,))
        return Decision(previous)
    scene = observed.scene(spec)
    verdict = judge(previous, scene, now) if previous.phase in RUNNING_PHASES else Verdict()
    finding = _classify(previous, spec, verdict, observed.refusal, now, observed.admission)
    target = TRANSITIONS.get((previous.phase, finding.happening)) if finding else None
    if finding is not None and target is None:  # not a transition from this phase: nothing changes
        return Decision(previous)
    base, recovered = observe(previous, observed, spec, now)
    transitions: tuple[Transition, ...] = ()
    if finding is not None and target is not None:
        base, transition = _apply(base, target, finding, observed, now)
        transitions = (transition,)
    judging = verdict.judging if not transitions else None
    status = _annotate(base, scene, judging, now)
    return Decision(status, transitions, _wake_at(status, scene, judging, now), recovered=recovered)


# -- classification --------------------------------------------------------------------------------------------


def _classify(
    previous: Status,
    spec: JobSpec,
    verdict: Verdict,
    refusal: Refusal | None,
    now: datetime,
    admission: Admission | None = None,
) -> Finding | None:
    phase = previous.phase
    if phase == Phase.PENDING:
        problems = semantic_problems(spec)
        if problems:
            return Finding(Happening.INVALID_SPEC, "; ".join(problems))
        if admission is not None and admission.wont_fit and admission.enforce:
            return Finding(Happening.WONT_FIT, admission.message)
        return Finding(Happening.SUSPEND if spec.suspend else Happening.START)
    if phase == Phase.SUSPENDED:
        return None if spec.suspend else Finding(Happening.RESUME)
    if phase.finished:
        return None
    return _classify_running(previous, spec, verdict, refusal, now)


def _classify_running(
    previous: Status, spec: JobSpec, verdict: Verdict, refusal: Refusal | None, now: datetime
) -> Finding | None:
    if refusal and refusal.permanent:
        return Finding(Happening.CREATE_REFUSED, refusal.message, reason=refusal.reason)
    deadline = _active_deadline(previous, spec)
    if deadline is not None and now >= deadline:
        return Finding(
            Happening.DEADLINE_EXCEEDED,
            f"the job ran longer than activeDeadlineSeconds ({spec.active_deadline_seconds}s)",
        )
    pod_phase = previous.phase.pod_phase
    assert pod_phase is not None
    gate = next((c for c in verdict.exits if c.exit_code == GATE_NOT_MET_EXIT_CODE), None)
    if gate is not None and pod_phase == PodPhase.EXPORT:  # it refused to publish (docs/contract.md §8): permanent
        message = gate_message(gate.message, spec.gate, spec.output_uri)
        return Finding(Happening.GATE_NOT_MET, message, gate.failure(pod_phase.value, now))
    permanent = next((c for c in verdict.exits if c.exit_code == PERMANENT_EXIT_CODE), None)
    if permanent is not None:
        return Finding(Happening.INVALID_INPUT, permanent.describe(), permanent.failure(pod_phase.value, now))
    if verdict.succeeded:
        return Finding(Happening.GROUP_SUCCEEDED)
    if spec.suspend:
        return Finding(Happening.SUSPEND)
    cause = verdict.disruption or verdict.failure
    return _restart_finding(previous, spec, cause, now) if cause else None


def _restart_finding(previous: Status, spec: JobSpec, cause: Cause, now: datetime) -> Finding:
    if cause.kind == RestartKind.DISRUPTION:
        exhausted = previous.disruptions >= spec.disruption_limit
        happening = Happening.DISRUPTIONS_EXHAUSTED if exhausted else Happening.GROUP_DISRUPTED
        return Finding(happening, cause.describe(), cause=cause)
    exhausted = previous.failures >= spec.backoff_limit
    happening = Happening.BACKOFF_EXHAUSTED if exhausted else Happening.GROUP_FAILED
    phase = previous.phase.pod_phase
    return Finding(happening, cause.describe(), cause.failure(phase.value if phase else "", now), cause=cause)


def _active_deadline(status: Status, spec: JobSpec) -> datetime | None:
    if spec.active_deadline_seconds is None or status.start_time is None:
        return None
    return status.start_time + timedelta(seconds=spec.active_deadline_seconds)


# -- applying a transition -------------------------------------------------------------------------------------


def _apply(
    base: Status, target: Target, finding: Finding, observed: Observed, now: datetime
) -> tuple[Status, Transition]:
    spec = observed.spec
    assert spec is not None
    if target == Target.FAILED:
        return fail(base, finding, now)
    if target == Target.SUSPENDED:
        return suspend(base, now)
    if target == Target.RESTART:
        assert finding.cause is not None
        return restart(base, finding, finding.cause, spec, observed.settings, now)
    return advance(base, finding, observed, spec, now)


# -- what to tell ----------------------------------------------------------------------------------------------


def _notices(previous: Status, status: Status) -> tuple[Notice, ...]:
    """An Event for each noticed condition that appeared or changed."""
    out = []
    for type_ in NOTICED:
        old, new = previous.condition(type_), status.condition(type_)
        if new is not None and (old is None or (old.reason, old.message) != (new.reason, new.message)):
            out.append(Notice(Reason(new.reason), new.message))
    old, new = previous.condition(ConditionType.WAITING), status.condition(ConditionType.WAITING)
    if new is not None and new.reason in WAITING_NOTICED and (old is None or old.reason != new.reason):
        out.append(Notice(Reason(new.reason), new.message))
    return tuple(out)


def _fit_warning(previous: Status, admission: Admission | None) -> tuple[Notice, ...]:
    """``fitCheck: warn``: a job whose plan does not fit starts anyway, with a Warning Event saying so."""
    if admission is None or not admission.wont_fit or admission.enforce or previous.phase != Phase.PENDING:
        return ()
    return (Notice(Reason.WONT_FIT, f"{admission.message} (fitCheck: warn)"),)


def _recovered(status: Status, restart: Restart) -> Notice:
    where = f" on node {restart.node}" if restart.node else ""
    message = (
        f"the {status.phase.value.lower()} pod group (attempt {restart.attempt}) runs in full again "
        f"{restart.resume_seconds:.0f}s after the restart ({restart.kind} {restart.reason}: pod {restart.pod}{where})"
    )
    return Notice(Reason.RECOVERED, message, warning=False)


# -- helpers ---------------------------------------------------------------------------------------------------


def _annotate(status: Status, scene: Scene, judging: Judging | None, now: datetime) -> Status:
    """``status`` with the Waiting and PodsStuck conditions of what it waits for."""
    return replace(
        status, conditions=set_conditions(status.conditions, now, waiting_conditions(status, scene, judging, now))
    )


def _wake_at(status: Status, scene: Scene, judging: Judging | None, now: datetime) -> datetime | None:
    """When a clock (not an observation) could next change the decision."""
    spec = scene.spec
    times: list[datetime] = []
    if status.phase in RUNNING_PHASES:
        deadline = _active_deadline(status, spec)
        if deadline:
            times.append(deadline)
        progress = progress_deadline(status, spec)
        if progress:
            times.append(progress)
        limit = timedelta(seconds=spec.startup_deadline_seconds)
        times.extend(p.created + limit for p in current_group(status, scene.pods) if not p.started and p.created)
    if status.phase.finished and status.completion_time and spec.ttl_seconds_after_finished is not None:
        times.append(status.completion_time + timedelta(seconds=spec.ttl_seconds_after_finished))
    times += wake_times(status, scene, judging)
    return min((t for t in times if t > now), default=None)
