"""The sweep's state machine: ``decide(previous, observed, now) -> SweepDecision``. Pure.

``Pending`` checks the sweep once (:func:`.sweep_trials.sweep_problems` plus the apiserver's verdict on every
trial's job, gathered by the reconciler with dry-run creates) and either fails it (``InvalidSpec``) or fixes its
trial list in the status. ``Running`` then follows the trials' jobs: it copies their phase, objective value and
cache hit into the trial table, starts waiting trials while fewer than ``parallelism`` run, and ends the sweep
when every trial has finished, naming the best. The decision also lists what to do (trials to create, to suspend,
to resume) and the Events to record; the reconciler does it, and never reacts to status changes.

**One reference pass per cache key.** Trials whose jobs share a :func:`.sweep_trials.reference_group` do not run
their precompute phases side by side: while one of them has not finished its precompute phase, the others wait
(they would compute the same cache at once); once it has, they may all start and find the cache (``cacheHit``).
If that trial fails before finishing it, the next one computes. Trials of other groups use the free slots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from .conditions import ConditionType
from .creators import CreatorRefusal
from .refusals import Refusal
from .rules.trials import Trial, best, output_uri, trial_spec
from .rules.userinfo import redact
from .spec import InvalidSpec
from .status import Condition
from .sweep_spec import Sweep
from .sweep_status import ACTIVE, PAST_PRECOMPUTE, WAITING, Best, SweepPhase, SweepStatus, TrialRecord, TrialView
from .sweep_trials import expand, reference_group, sweep_problems

MAX_MESSAGE = 4000


@dataclass(frozen=True)
class SweepObserved:
    """What a decision depends on besides the previous status and the clock. ``sweep`` is ``None`` when the spec
    could not be parsed (``spec_error`` says why); ``trials`` are the observed trial jobs by name; ``rejections``
    the apiserver's objections to the trials' jobs (dry-run creates, before the first trial starts); ``refused``
    the trials whose job the apiserver refused to create since (trial name → its message); ``forbidden`` a 403 to
    the last dry-run or create of a trial job (a ResourceQuota, a webhook, RBAC), or the operator's own refusal of
    the sweep's creator (``--check-sweep-creators``), which the reconciler checks again with backoff."""

    sweep: Sweep | None
    spec_error: str | None = None
    trials: Mapping[str, TrialView] = field(default_factory=dict)
    rejections: tuple[str, ...] = ()
    refused: Mapping[str, str] = field(default_factory=dict)
    forbidden: Refusal | CreatorRefusal | None = None


@dataclass(frozen=True)
class SweepEvent:
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class SweepDecision:
    status: SweepStatus
    events: tuple[SweepEvent, ...] = ()
    create: tuple[Trial, ...] = ()  # trials whose job to create (create-if-absent: repeating it is safe)
    suspend: tuple[str, ...] = ()  # trial jobs to set spec.suspend: true on
    resume: tuple[str, ...] = ()  # ... and false


def decide(previous: SweepStatus, observed: SweepObserved, now: datetime) -> SweepDecision:
    """The sweep's next status, and what to do, given its previous status and what was observed at ``now``."""
    sweep = observed.sweep
    if sweep is None:
        if previous.phase == SweepPhase.PENDING and observed.spec_error:
            return _fail(previous, "InvalidSpec", observed.spec_error, now)
        return SweepDecision(previous)
    if previous.phase == SweepPhase.PENDING and observed.forbidden is not None:
        return _held(previous, observed.forbidden, now)  # the trials' jobs could not all be checked
    if previous.phase.finished:
        return SweepDecision(previous)
    pending = previous.phase == SweepPhase.PENDING
    decision = _start(previous, observed, sweep, now) if pending else _run(previous, observed, sweep, now)
    refusal = None if decision.status.phase.finished else observed.forbidden  # a finished sweep creates nothing
    return _held_or_cured(decision, refusal, now)


def trials_to_check(sweep: Sweep) -> tuple[Trial, ...]:
    """The trials whose jobs the reconciler dry-runs before the sweep starts: none when the sweep has problems of
    its own (then it fails on those)."""
    try:
        trials = expand(sweep)
    except InvalidSpec:
        return ()
    return () if sweep_problems(sweep, trials) else trials


# -- Pending -----------------------------------------------------------------------------------------------------


def _start(previous: SweepStatus, observed: SweepObserved, sweep: Sweep, now: datetime) -> SweepDecision:
    try:
        trials = expand(sweep)
    except InvalidSpec as e:
        return _fail(previous, "InvalidSpec", str(e), now)
    problems = sweep_problems(sweep, trials) + list(observed.rejections)
    if problems:
        return _fail(previous, "InvalidSpec", _join(problems), now)
    template, spec = sweep.spec.template, sweep.spec
    records = tuple(TrialRecord(t.name, t.index, t.parameters, output=output_uri(template, t.name)) for t in trials)
    started = replace(previous, phase=SweepPhase.RUNNING, trials=records, start_time=now)
    decision = _run(started, observed, sweep, now)
    message = (
        f"{len(trials)} trial(s), at most {spec.parallelism} at once, ranked by eval {spec.objective.metric} "
        f"({spec.objective.goal})"
    )
    return replace(decision, events=(SweepEvent("Started", message), *decision.events))


# -- Running / Suspended -----------------------------------------------------------------------------------------


def _run(previous: SweepStatus, observed: SweepObserved, sweep: Sweep, now: datetime) -> SweepDecision:
    spec = sweep.spec
    records = tuple(_update(r, observed.trials.get(r.name), sweep) for r in previous.trials)
    records = tuple(_refused(r, observed) for r in records)
    create: tuple[Trial, ...] = ()
    if not spec.suspend:
        records, create = _schedule(records, observed.trials, sweep)
    owned = {n: v for n, v in observed.trials.items() if v.owner_uid == sweep.meta.uid and not v.terminating}
    unfinished = {r.name for r in records if r.phase not in ("Succeeded", "Failed", WAITING)}
    suspend = tuple(sorted(n for n, v in owned.items() if n in unfinished and spec.suspend and not v.suspend))
    resume = tuple(sorted(n for n, v in owned.items() if n in unfinished and not spec.suspend and v.suspend))
    winner = _best(records, sweep)
    status = replace(previous, trials=records, best=winner, observed_generation=sweep.meta.generation)
    status = _settle(status, sweep, now)
    events = _trial_events(previous.trials, records, sweep) + _phase_events(previous, status, sweep)
    return SweepDecision(status, events, create, suspend, resume)


def _update(record: TrialRecord, view: TrialView | None, sweep: Sweep) -> TrialRecord:
    """The trial's row after observing its job (unchanged while the job is not observed)."""
    if view is None or view.terminating or record.finished:
        return record
    if view.owner_uid is None:  # a job of the same name made by hand: it will not go away by itself
        return replace(
            record,
            message=f"a PreferenceTrainingJob {view.name} exists that no sweep owns, so this trial cannot use its "
            "name: delete that job, or rename this sweep (trial names are <sweep>-<index>)",
        )
    if view.owner_uid != sweep.meta.uid:  # e.g. a trial of a deleted sweep of the same name, not yet collected
        return replace(record, message=f"waiting for the PreferenceTrainingJob {view.name}, not this sweep's, to go")
    metric = sweep.spec.objective.metric
    evaluation = view.evaluation
    value = evaluation.metrics.get(metric) if evaluation else None
    return replace(
        record,
        phase=view.phase,
        objective=value if value is not None else record.objective,
        step=evaluation.step if evaluation and value is not None else record.step,
        cache_hit=view.cache_hit if view.cache_hit is not None else record.cache_hit,
        message=view.message if view.phase == "Failed" else None,
    )


def _refused(record: TrialRecord, observed: SweepObserved) -> TrialRecord:
    message = observed.refused.get(record.name)
    if message is None or record.finished or record.name in observed.trials:
        return record
    return replace(record, phase="Failed", message=redact(f"the apiserver refused the trial's job: {message}")[:1000])


def _schedule(
    records: tuple[TrialRecord, ...], views: Mapping[str, TrialView], sweep: Sweep
) -> tuple[tuple[TrialRecord, ...], tuple[Trial, ...]]:
    """Start waiting trials, in order, while fewer than ``parallelism`` occupy a slot; a trial whose reference
    group has no finished reference pass waits while another trial of the group is computing it. Trials that
    should exist but are not observed are created again (create-if-absent)."""
    template, parallelism = sweep.spec.template, sweep.spec.parallelism
    groups = {r.name: reference_group(trial_spec(template, _trial(r), False)) for r in records}
    ready = {groups[r.name] for r in records if r.phase in PAST_PRECOMPUTE or _precomputed(views.get(r.name))}
    computing = {groups[r.name]: r.name for r in records if _occupies(r) and groups[r.name] not in ready}
    busy = sum(_occupies(r) for r in records)
    create = [_trial(r) for r in records if _occupies(r) and r.name not in views]
    out = []
    for r in records:
        group = groups[r.name]
        if r.phase != WAITING:
            out.append(r)
        elif busy >= parallelism:
            out.append(replace(r, message=f"waiting for a free slot (parallelism {parallelism})"))
        elif group is not None and group not in ready and group in computing:
            out.append(replace(r, message=f"waiting for trial {computing[group]} to finish the reference pass"))
        else:
            create.append(_trial(r))
            busy += 1
            if group is not None and group not in ready:
                computing[group] = r.name
            out.append(replace(r, phase="Pending", message=None))
    return tuple(out), tuple(create)


def _occupies(record: TrialRecord) -> bool:
    """A created, unfinished trial: it holds one of the ``parallelism`` slots (a suspended one resumes into it)."""
    return record.phase in ACTIVE or record.phase == "Suspended"


def _precomputed(view: TrialView | None) -> bool:
    return view is not None and view.precompute_done


def _trial(record: TrialRecord) -> Trial:
    return Trial(record.index, record.name, tuple(record.parameters.items()))


def _best(records: Sequence[TrialRecord], sweep: Sweep) -> Best | None:
    """The best trial by the shared ranking (:func:`.rules.trials.best`)."""
    i = best([(r.phase, r.objective) for r in records], sweep.spec.objective)
    winner = None if i is None else records[i]
    if winner is None or winner.objective is None:  # best() names only a trial with a value
        return None
    return Best(winner.name, winner.objective, winner.parameters, winner.output)


def _settle(status: SweepStatus, sweep: Sweep, now: datetime) -> SweepStatus:
    """The sweep's phase and conditions from its trials: finished when every trial is."""
    counts, spec = status.counts, sweep.spec
    if all(r.finished for r in status.trials):
        if status.best is not None:
            message = (
                f"{counts.succeeded} of {counts.total} trial(s) succeeded; best: {status.best.trial} with eval "
                f"{spec.objective.metric} {status.best.objective:g}"
            )
            updates = {"Running": ("False", "Succeeded", message), "Succeeded": ("True", "BestTrialFound", message)}
            phase = SweepPhase.SUCCEEDED
        else:
            reason, message = _no_best(counts.succeeded, counts.total, spec.objective.metric)
            updates = {"Running": ("False", reason, message), "Failed": ("True", reason, message)}
            phase = SweepPhase.FAILED
        return replace(status, phase=phase, completion_time=now, conditions=_conditions(status, now, updates))
    if spec.suspend:
        message = "spec.suspend is true: running trials suspended, no new trial starts"
        updates = {"Running": ("False", "Suspended", message), "Suspended": ("True", "Suspended", message)}
        return replace(status, phase=SweepPhase.SUSPENDED, conditions=_conditions(status, now, updates))
    message = f"{counts.running} running, {counts.waiting} waiting, {counts.succeeded + counts.failed} finished"
    updates = {"Running": ("True", "TrialsRunning", message)}
    if status.condition("Suspended"):
        updates["Suspended"] = ("False", "Resumed", "spec.suspend is false")
    return replace(status, phase=SweepPhase.RUNNING, conditions=_conditions(status, now, updates))


def _no_best(succeeded: int, total: int, metric: str) -> tuple[str, str]:
    if succeeded == 0:
        return "NoTrialSucceeded", f"all {total} trial(s) failed; see status.trials[].message"
    return "NoObjectiveValue", f"{succeeded} trial(s) succeeded but none reported eval {metric}"


def _fail(previous: SweepStatus, reason: str, message: str, now: datetime) -> SweepDecision:
    message = redact(message)  # a spec error may quote a value of the sweep's
    updates = {"Running": ("False", reason, message), "Failed": ("True", reason, message)}
    status = replace(
        previous, phase=SweepPhase.FAILED, completion_time=now, conditions=_conditions(previous, now, updates)
    )
    return SweepDecision(status, (SweepEvent(reason, message, warning=True),))


# -- refused by the apiserver (403) ------------------------------------------------------------------------------


def _held(previous: SweepStatus, refusal: Refusal | CreatorRefusal, now: datetime) -> SweepDecision:
    """``previous`` with a ``ReplicaFailure`` condition naming the refusal; a Warning Event when it is new."""
    if isinstance(refusal, CreatorRefusal):
        lead = "no trial is created (checked again with backoff)"
    else:
        lead = "the apiserver refuses to create the trials' jobs (retried with backoff)"
    message = redact(f"{lead}: {refusal.message}")
    old = previous.condition(ConditionType.REPLICA_FAILURE)
    updates = {ConditionType.REPLICA_FAILURE.value: ("True", refusal.reason.value, message[:MAX_MESSAGE])}
    status = replace(previous, conditions=_conditions(previous, now, updates))
    new = old is None or old.reason != refusal.reason.value
    return SweepDecision(status, (SweepEvent(refusal.reason.value, message, warning=True),) if new else ())


def _held_or_cured(decision: SweepDecision, refusal: Refusal | CreatorRefusal | None, now: datetime) -> SweepDecision:
    """``decision`` with the ``ReplicaFailure`` condition set from ``refusal``, or taken away once creates pass."""
    if refusal is not None:
        held = _held(decision.status, refusal, now)
        return replace(decision, status=held.status, events=decision.events + held.events)
    kept = tuple(c for c in decision.status.conditions if c.type != ConditionType.REPLICA_FAILURE)
    return replace(decision, status=replace(decision.status, conditions=kept))


# -- events and conditions ---------------------------------------------------------------------------------------


def _trial_events(before: Sequence[TrialRecord], after: Sequence[TrialRecord], sweep: Sweep) -> tuple[SweepEvent, ...]:
    old = {r.name: r for r in before}
    metric = sweep.spec.objective.metric
    events = []
    for r in after:
        was = old.get(r.name)
        params = _trial(r).describe()
        if was is not None and was.phase == WAITING and r.phase != WAITING:
            events.append(SweepEvent("TrialStarted", f"trial {r.name} started: {params}"))
        if (was is None or was.phase != r.phase) and r.phase == "Succeeded":
            value = f"eval {metric} {r.objective:g}" if r.objective is not None else f"no eval {metric} reported"
            events.append(SweepEvent("TrialSucceeded", f"trial {r.name} succeeded ({params}): {value}"))
        if (was is None or was.phase != r.phase) and r.phase == "Failed":
            events.append(SweepEvent("TrialFailed", f"trial {r.name} failed ({params}): {r.message or ''}", True))
    return tuple(events)


def _phase_events(previous: SweepStatus, status: SweepStatus, sweep: Sweep) -> tuple[SweepEvent, ...]:
    if previous.phase == status.phase:
        return ()
    if status.phase == SweepPhase.SUSPENDED:
        return (SweepEvent("Suspended", "spec.suspend is true: running trials suspended"),)
    if status.phase == SweepPhase.RUNNING and previous.phase == SweepPhase.SUSPENDED:
        return (SweepEvent("Resumed", "spec.suspend is false: trials resume"),)
    if status.phase.finished:
        condition = status.condition("Succeeded" if status.phase == SweepPhase.SUCCEEDED else "Failed")
        assert condition is not None
        return (SweepEvent(condition.reason, condition.message, status.phase == SweepPhase.FAILED),)
    return ()


def _conditions(
    status: SweepStatus, now: datetime, updates: Mapping[str, tuple[str, str, str]]
) -> tuple[Condition, ...]:
    """``status.conditions`` with each named condition set to (status, reason, message); the transition time moves
    only when the status does."""
    out = {c.type: c for c in status.conditions}
    for type_, (state, reason, message) in updates.items():
        old = out.get(type_)
        since = now if old is None or old.status != state else old.last_transition_time
        out[type_] = Condition(type_, state, reason, message, since)
    order = ["Running", "Suspended", ConditionType.REPLICA_FAILURE, "Succeeded", "Failed"]
    return tuple(sorted(out.values(), key=lambda c: order.index(c.type) if c.type in order else len(order)))


def _join(problems: Sequence[str]) -> str:
    text = ""
    for i, problem in enumerate(problems):
        more = f"; and {len(problems) - i} more problem(s)"
        if len(text) + len(problem) + len(more) > MAX_MESSAGE:
            return text + more
        text = f"{text}; {problem}" if text else problem
    return text
