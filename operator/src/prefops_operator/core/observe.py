"""Everything a decision reads besides the previous status and the clock (:class:`Observed`), and the part of the
next status that follows from observation alone, whatever transition happens (:func:`observe`). Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from .admission import Admission
from .classify import Scene, attempt_pods
from .conditions import ConditionType, Reason, set_conditions
from .evaluation import Evaluation
from .nodes import NodeView
from .phases import RUNNING_PHASES, group_size
from .pods import PodView
from .refusals import Refusal
from .restarts import RestartSettings
from .spec import Job, JobSpec
from .status import Progress, Restart, Status


@dataclass(frozen=True)
class Observed:
    """Everything a decision depends on besides the previous status and the clock.

    ``spec`` is ``None`` when the job's spec could not be parsed (``spec_error`` says why). ``pods`` are the pods
    the job controls (owner reference with its uid); ``nodes`` every node by name. ``refusal`` is why the apiserver
    refused the last child built from the spec (an invalid toleration, a quota, a missing ServiceAccount, ...) or
    why a name is taken. ``progress`` and ``evaluation`` are the latest sample of the trainer's metrics, if one was
    taken. ``spec_changes`` names the fields changed since the job started that cannot change (the job goes on
    with the spec it started with: ``job`` is that one). ``admission`` is the memory plan's verdict, made while the
    job is Pending (:mod:`.admission`).
    """

    job: Job | None
    pods: Sequence[PodView] = ()
    spec_error: str | None = None
    refusal: Refusal | None = None
    progress: Progress | None = None
    evaluation: Evaluation | None = None
    nodes: Mapping[str, NodeView] = field(default_factory=dict)
    settings: RestartSettings = field(default_factory=RestartSettings)
    spec_changes: tuple[str, ...] = ()
    admission: Admission | None = None

    @property
    def spec(self) -> JobSpec | None:
        return self.job.spec if self.job else None

    def scene(self, spec: JobSpec) -> Scene:
        name = self.job.meta.name if self.job else ""
        return Scene(name, spec, self.pods, self.nodes, self.settings)


def observe(previous: Status, observed: Observed, spec: JobSpec, now: datetime) -> tuple[Status, Restart | None]:
    """The previous status with what is observed regardless of transitions: shape, generation, progress and
    evaluation, when the current group first ran in full (and so when a restart recovered: returned), and the
    ReplicaFailure and SpecChangeRefused conditions."""
    meta = observed.job.meta if observed.job else None
    status = replace(
        previous,
        shape=f"{spec.resources.nodes}x{spec.resources.gpus_per_node}",
        progress=_progress(previous, observed.progress, now),
        evaluation=_evaluation(previous, observed.evaluation),
        observed_generation=meta.generation if meta else previous.observed_generation,
        conditions=set_conditions(previous.conditions, now, _refusals(previous, observed) | _feasible(observed)),
        plan=dict(observed.admission.summary) if observed.admission else previous.plan,
    )
    return _group_running(status, observed, spec, now)


def _progress(previous: Status, sample: Progress | None, now: datetime) -> Progress | None:
    """The scraped numbers over the previous ones; ``last_step_time`` moves when the step changes, and at the first
    scrape of an attempt (the progress deadline counts from there). A scrape that read the same numbers writes
    nothing."""
    progress = previous.progress
    if sample is None:
        return progress
    old = progress or Progress()
    merged = old.merged(sample)
    since = previous.group_running_time
    first_of_attempt = since is not None and (old.last_step_time is None or old.last_step_time < since)
    if merged.step != old.step or first_of_attempt:
        merged = replace(merged, last_step_time=now)
    if replace(merged, last_scrape_time=None) == replace(old, last_scrape_time=None):
        return progress
    return merged


def _evaluation(previous: Status, sample: Evaluation | None) -> Evaluation | None:
    if sample is not None and sample.newer_than(previous.evaluation):
        return sample
    return previous.evaluation


def _refusals(previous: Status, observed: Observed) -> dict[ConditionType, tuple[str, str, str] | None]:
    """ReplicaFailure while a retried refusal lasts in a running phase; SpecChangeRefused while a frozen field
    stays changed."""
    refusal = observed.refusal
    running = previous.phase in RUNNING_PHASES
    failure = None
    if refusal is not None and not refusal.permanent and running:
        failure = ("True", str(refusal.reason), refusal.message)
    changed = None
    if observed.spec_changes:
        fields = ", ".join(observed.spec_changes)
        changed = ("True", str(Reason.FIELD_IMMUTABLE), _refused_message(fields))
    return {ConditionType.REPLICA_FAILURE: failure, ConditionType.SPEC_CHANGE_REFUSED: changed}


def _feasible(observed: Observed) -> dict[ConditionType, tuple[str, str, str] | None]:
    """The Feasible condition, when the admission's plan was just made (it stays as it was afterwards)."""
    admission = observed.admission
    if admission is None:
        return {}
    return {ConditionType.FEASIBLE: (admission.status, admission.reason, admission.message)}


def _refused_message(fields: str) -> str:
    return (
        f"{fields} changed after the job started: refused, the job goes on with the spec it started with. Once "
        "started, only suspend, backoffLimit, disruptionLimit, nodeLostGraceSeconds, activeDeadlineSeconds, "
        "startupDeadlineSeconds, ttlSecondsAfterFinished and training.progressDeadlineSeconds may change: revert "
        "the edit, or delete the job and create it again"
    )


def _group_running(status: Status, observed: Observed, spec: JobSpec, now: datetime) -> tuple[Status, Restart | None]:
    """Set ``group_running_time`` when every pod of the current group first runs; that is when a restart
    recovered."""
    pod_phase = status.phase.pod_phase
    if pod_phase is None or status.group_running_time is not None:
        return status, None
    mine = [p for p in attempt_pods(status, observed.pods) if p.started and not p.terminating]
    if {p.index for p in mine} != set(range(group_size(spec, pod_phase))):
        return status, None
    status = replace(status, group_running_time=now)
    restart = status.last_restart
    if restart is None or restart.attempt != status.attempt or restart.resumed_time is not None:
        return status, None
    recovered = replace(restart, resumed_time=now)
    return replace(status, last_restart=recovered), recovered
