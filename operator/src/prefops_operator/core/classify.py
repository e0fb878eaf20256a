"""What happened to the running phase's current pod group, sorted into a :class:`Verdict`. Pure.

The pods of the current attempt either all succeeded, or one of them says why the group must restart:

- a *disruption*: a pod deleted while it runs (preempted, evicted, drained, ``kubectl delete``), a pod whose node
  has been in trouble longer than ``spec.nodeLostGraceSeconds``, a pod gone without a trace once the group ran, a
  pod the kubelet failed for node pressure or a shutdown, a trainer that exited 75 ("resume me");
- a *failure*: a trainer that exited non-zero (or was OOM-killed), a pod not running by ``startupDeadlineSeconds``,
  a training group with no new step for ``spec.training.progressDeadlineSeconds``.

A disruption explains the failures around it (a rank whose peer vanished fails too), so it wins. A rank's
non-zero exit while other ranks still run is *judged* first: for ``--exit-judging-seconds`` the operator waits for
a lost node or a deleted peer to show; only then is it a failure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .conditions import FailureReason, RestartKind
from .health import is_lost, trouble
from .naming import pod_name
from .nodes import NodeView
from .phases import PodPhase, group_size
from .pods import PodView
from .restarts import Cause, RestartSettings, ended, lost, removed, vanished
from .spec import JobSpec
from .status import Phase, Status
from .timefmt import format_time


@dataclass(frozen=True)
class Judging:
    """A rank's exit being judged until ``until``."""

    cause: Cause
    until: datetime


@dataclass(frozen=True)
class Verdict:
    succeeded: bool = False
    exits: tuple[Cause, ...] = ()  # every pod of the group that exited non-zero, earliest first
    disruption: Cause | None = None
    failure: Cause | None = None
    judging: Judging | None = None


def attempt_pods(status: Status, pods: Sequence[PodView]) -> list[PodView]:
    """Every pod of the running phase's current attempt, terminating ones included."""
    return [p for p in pods if p.phase == status.phase.pod_phase and p.attempt == status.attempt]


@dataclass(frozen=True)
class Scene:
    """What a verdict is given on: the job's name and spec, the pods it controls, the nodes, and the settings."""

    name: str
    spec: JobSpec
    pods: Sequence[PodView]
    nodes: Mapping[str, NodeView]
    settings: RestartSettings


def judge(status: Status, scene: Scene, now: datetime) -> Verdict:
    """The verdict on the current group of ``status``'s running phase."""
    spec, nodes = scene.spec, scene.nodes
    mine = attempt_pods(status, scene.pods)
    failed_pods = sorted((p for p in mine if p.failed), key=lambda p: (p.finished or now, p.index))
    exits = tuple(ended(p, nodes) for p in failed_pods)
    failed = [c for c in exits if c.kind == RestartKind.FAILURE]
    disruption = next((c for c in exits if c.kind == RestartKind.DISRUPTION), None)
    disruption = disruption or _disruption(status, scene, mine, now, bool(failed))
    judging = None if disruption else _judging(failed, mine, scene.settings, now)
    failure = None
    if disruption is None and judging is None:
        failure = next(iter(failed), None) or _startup_overdue(mine, spec, now) or _stalled(status, mine, spec, now)
    size = group_size(spec, status.phase.pod_phase or PodPhase.EXPORT)
    done = {p.index for p in mine if p.succeeded} == set(range(size))
    succeeded = done and not exits and disruption is None
    return Verdict(succeeded, exits, disruption, failure, judging)


def _disruption(
    status: Status, scene: Scene, mine: Sequence[PodView], now: datetime, rank_exited: bool
) -> Cause | None:
    """A pod of the group deleted, lost or gone. Once a rank has exited non-zero, a peer whose node is in trouble
    is lost at once: the group is broken either way, and the node is what broke it."""
    running = [p for p in mine if not p.finished_or_failed]
    for p in running:
        if p.terminating:
            return removed(p, scene.nodes)
    grace = scene.spec.node_lost_grace_seconds
    for p in running:
        found = trouble(p, scene.nodes)
        if found is not None and (rank_exited or is_lost(p, scene.nodes, grace, now)):
            return lost(p, found, grace)
    return _vanished(status, scene, mine)


def _vanished(status: Status, scene: Scene, mine: Sequence[PodView]) -> Cause | None:
    """A replica with no pod at all once the whole group had run: force-deleted, or removed with its node."""
    pod_phase = status.phase.pod_phase
    if status.group_running_time is None or pod_phase is None:
        return None
    present = {p.index for p in mine}
    missing = [i for i in range(group_size(scene.spec, pod_phase)) if i not in present]
    return vanished(pod_name(scene.name, pod_phase, missing[0], status.attempt)) if missing else None


def _judging(
    failed: Sequence[Cause], mine: Sequence[PodView], settings: RestartSettings, now: datetime
) -> Judging | None:
    """Hold the first non-zero exit while other ranks still run, for at most ``settings.exit_judging`` seconds."""
    if not failed or settings.exit_judging <= 0:
        return None
    first = next(p for p in mine if p.name == failed[0].pod)
    peers_run = any(not p.finished_or_failed for p in mine)
    if not peers_run or first.finished is None:
        return None
    until = first.finished + timedelta(seconds=settings.exit_judging)
    return Judging(failed[0], until) if now < until else None


def _startup_overdue(mine: Sequence[PodView], spec: JobSpec, now: datetime) -> Cause | None:
    limit = timedelta(seconds=spec.startup_deadline_seconds)
    for p in mine:
        if not p.terminating and not p.started and p.created is not None and now - p.created >= limit:
            why = f"{p.waiting_reason}: {p.waiting_message}" if p.waiting_message else p.waiting_reason or "Pending"
            message = f"not running {spec.startup_deadline_seconds}s after creation ({why})"
            return Cause(RestartKind.FAILURE, FailureReason.STARTUP_DEADLINE_EXCEEDED, p.name, p.node, message)
    return None


def progress_deadline(status: Status, spec: JobSpec) -> datetime | None:
    """When the training group counts as stalled: ``progressDeadlineSeconds`` after the operator last saw the step
    advance, once it has read the trainer's metrics during this attempt; ``None`` before (or outside training)."""
    progress, since = status.progress, status.group_running_time
    if status.phase != Phase.TRAINING or since is None or progress is None or progress.last_step_time is None:
        return None
    if progress.last_step_time < since:
        return None
    return progress.last_step_time + timedelta(seconds=spec.progress_deadline_seconds)


def _stalled(status: Status, mine: Sequence[PodView], spec: JobSpec, now: datetime) -> Cause | None:
    deadline = progress_deadline(status, spec)
    if deadline is None or now < deadline:
        return None
    first = min(mine, key=lambda p: p.index, default=None)
    progress = status.progress
    step = progress.step if progress else None
    message = (
        f"no training step completed in {spec.progress_deadline_seconds}s (spec.training.progressDeadlineSeconds): "
        f"step {step} since {format_time(progress.last_step_time if progress else None)}, as rank 0's metrics read"
    )
    name, node = (first.name, first.node) if first else ("", None)
    return Cause(RestartKind.FAILURE, FailureReason.PROGRESS_DEADLINE_EXCEEDED, name, node, message)
