"""Building the next status for each kind of transition: a phase starts or succeeds, a group restarts, the job
fails or is suspended. Pure; :mod:`.machine` decides which, these say what it writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum
from typing import Any

from .algorithms import ALGORITHMS
from .classify import attempt_pods
from .conditions import ConditionType, Reason, RestartKind, set_conditions
from .evaluation import Evaluation, final_evaluation
from .observe import Observed
from .phases import RUNNING_PHASES, Phase, phase_plan, running
from .pods import PodView
from .restarts import Cause, RestartSettings
from .spec import JobSpec
from .status import PHASE_KEYS, Condition, Failure, PhaseTimes, Restart, Status


class Happening(str, Enum):
    START = "Start"
    INVALID_SPEC = "InvalidSpec"
    GROUP_SUCCEEDED = "GroupSucceeded"
    GROUP_FAILED = "GroupFailed"  # a failure: restart, charged to backoffLimit
    GROUP_DISRUPTED = "GroupDisrupted"  # a disruption: restart, charged to disruptionLimit
    BACKOFF_EXHAUSTED = "BackoffExhausted"
    DISRUPTIONS_EXHAUSTED = "DisruptionsExhausted"
    INVALID_INPUT = "InvalidInput"
    GATE_NOT_MET = "GateNotMet"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    SUSPEND = "Suspend"
    RESUME = "Resume"
    CREATE_REFUSED = "CreateRefused"  # the apiserver refused a child, and retrying cannot help
    WONT_FIT = "WontFit"  # the admission's memory plan does not fit the GPUs (spec.resources.fitCheck: enforce)


#: the Failed condition's reason for each happening that fails a job
FAILURE_REASONS: Mapping[Happening, Reason] = {
    Happening.INVALID_SPEC: Reason.INVALID_SPEC,
    Happening.INVALID_INPUT: Reason.INVALID_INPUT,
    Happening.BACKOFF_EXHAUSTED: Reason.BACKOFF_LIMIT_EXCEEDED,
    Happening.DISRUPTIONS_EXHAUSTED: Reason.DISRUPTION_LIMIT_EXCEEDED,
    Happening.DEADLINE_EXCEEDED: Reason.DEADLINE_EXCEEDED,
    Happening.GATE_NOT_MET: Reason.GATE_NOT_MET,
    Happening.WONT_FIT: Reason.WONT_FIT,
}


@dataclass(frozen=True)
class Transition:
    """One change of phase (or a restart within one), for Events and metrics."""

    source: Phase
    target: Phase
    reason: str  # a Reason, or the started_reason of the phase it starts
    message: str
    warning: bool = False
    restart: Restart | None = None  # the restart it is, if it is one


@dataclass(frozen=True)
class Finding:
    happening: Happening
    message: str = ""
    failure: Failure | None = None
    reason: Reason | None = None  # the Failed reason, when not the happening's own
    cause: Cause | None = None  # why the group restarts


def current_group(status: Status, pods: Sequence[PodView]) -> list[PodView]:
    """The pods of the running phase's current attempt that are not being deleted, by replica index."""
    return sorted((p for p in attempt_pods(status, pods) if not p.terminating), key=lambda p: p.index)


def advance(
    base: Status, finding: Finding, observed: Observed, spec: JobSpec, now: datetime
) -> tuple[Status, Transition]:
    phases = dict(base.phases)
    if base.phase in RUNNING_PHASES:
        key = PHASE_KEYS[base.phase]
        done = replace(phases.get(key, PhaseTimes()), completion_time=now, attempt=base.attempt)
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
    status = replace(base, phase=nxt, phases=phases, group_running_time=None)
    if finding.happening in (Happening.START, Happening.RESUME):
        status = replace(status, start_time=now)  # the activeDeadlineSeconds clock (re)starts
    if finding.happening == Happening.RESUME:
        status = replace(status, attempt=status.attempt + 1)  # never the names the suspended pods still hold
    if nxt == Phase.SUCCEEDED:
        return succeed(base, status, spec, now)
    key = PHASE_KEYS[nxt]
    if phases.get(key, PhaseTimes()).start_time is None:
        phases[key] = replace(phases.get(key, PhaseTimes()), start_time=now)
    row = running(nxt)
    message = row.message(spec)
    updates = {ConditionType.RUNNING: ("True", row.reason, message)}
    if base.condition(ConditionType.SUSPENDED):
        updates[ConditionType.SUSPENDED] = ("False", Reason.RESUMED, "spec.suspend is false")
    reason = Reason.RESUMED if finding.happening == Happening.RESUME else row.started_reason
    status = replace(status, phases=phases, conditions=_conditions(base.conditions, now, updates))
    return status, Transition(base.phase, nxt, reason, message)


def succeed(base: Status, status: Status, spec: JobSpec, now: datetime) -> tuple[Status, Transition]:
    message = f"model written to {spec.output_uri}"
    updates = {
        ConditionType.RUNNING: ("False", Reason.SUCCEEDED, message),
        ConditionType.SUCCEEDED: ("True", Reason.EXPORTED, message),
    }
    status = replace(
        status,
        output_uri=spec.output_uri,
        completion_time=now,
        conditions=_conditions(base.conditions, now, updates),
    )
    return status, Transition(base.phase, Phase.SUCCEEDED, Reason.SUCCEEDED, message)


def restart(
    base: Status, finding: Finding, cause: Cause, spec: JobSpec, settings: RestartSettings, now: datetime
) -> tuple[Status, Transition]:
    failure = cause.kind == RestartKind.FAILURE
    failures, disruptions = base.failures + failure, base.disruptions + (not failure)
    attempt = base.attempt + 1
    wait = settings.backoff_after(failures) if failure else None
    record = Restart(
        str(cause.kind), cause.reason, attempt, cause.pod, cause.node, cause.message, now, now + wait if wait else None
    )
    if failure:
        count = f"failure {failures} of backoffLimit {spec.backoff_limit}"
    else:
        count = f"disruption {disruptions} of disruptionLimit {spec.disruption_limit}; backoffLimit untouched"
    message = f"{finding.message}; recreating the {base.phase.value.lower()} pod group as attempt {attempt} ({count})"
    status = replace(
        base,
        restarts=base.restarts + 1,
        attempt=attempt,
        failures=failures,
        disruptions=disruptions,
        last_failure=finding.failure or base.last_failure,
        last_restart=record,
        group_running_time=None,
        conditions=_conditions(
            base.conditions, now, {ConditionType.RUNNING: ("True", running(base.phase).reason, message)}
        ),
    )
    reason = Reason.RESTARTING if failure else Reason.DISRUPTED
    return status, Transition(base.phase, base.phase, reason, message, warning=True, restart=record)


def fail(base: Status, finding: Finding, now: datetime) -> tuple[Status, Transition]:
    reason = finding.reason or FAILURE_REASONS[finding.happening]
    message = finding.message
    if finding.happening == Happening.BACKOFF_EXHAUSTED:
        message = f"{finding.message}; backoffLimit ({base.failures} failures) exhausted"
    if finding.happening == Happening.DISRUPTIONS_EXHAUSTED:
        message = f"{finding.message}; disruptionLimit ({base.disruptions} disruptions) exhausted"
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


def suspend(base: Status, now: datetime) -> tuple[Status, Transition]:
    message = "spec.suspend is true: pods deleted, finished phases and checkpoints kept"
    status = replace(
        base,
        phase=Phase.SUSPENDED,
        group_running_time=None,
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


def _conditions(
    current: Sequence[Condition], now: datetime, updates: Mapping[ConditionType, tuple[str, str, str]]
) -> tuple[Condition, ...]:
    return set_conditions(current, now, {k: (s, str(r), m) for k, (s, r, m) in updates.items()})


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
