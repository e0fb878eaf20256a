"""Whatever a job waits for, said in its status: the ``Waiting`` and ``PodsStuck`` conditions. Pure.

``Waiting`` names the first of: a rank's exit being judged, the backoff after a failure, the previous attempt's
pods saving a checkpoint, a node that stopped reporting (and when its pods count as lost), a pod the scheduler
cannot place or whose container cannot start (and when the startup deadline fails the attempt). ``PodsStuck``
names every pod that stays ``Terminating`` on a lost node or past its grace period, with its node: the job goes on
without it. Each message is stable while the situation lasts (times, never "for N seconds"), so it is written
once; its ``lastTransitionTime`` says since when.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from .classify import Judging, Scene, attempt_pods
from .conditions import ConditionType, Reason
from .health import abandoned_at, is_abandoned, lost_at, trouble
from .pods import PodView
from .restarts import blockers, not_before
from .status import RUNNING_PHASES, Status
from .timefmt import format_time

#: container waiting reasons that are a normal step of starting, not worth a condition
STARTING = frozenset({"ContainerCreating", "PodInitializing"})

Update = tuple[str, str, str] | None


def conditions(status: Status, scene: Scene, judging: Judging | None, now: datetime) -> dict[ConditionType, Update]:
    """The Waiting and PodsStuck conditions of ``status`` (``None``: absent)."""
    found = _waiting(status, scene, judging, now) if status.phase in RUNNING_PHASES else None
    stuck = _stuck(status, scene, now)
    return {
        ConditionType.WAITING: ("True", found[0], found[1]) if found else None,
        ConditionType.PODS_STUCK: ("True", Reason.STUCK_TERMINATING, stuck) if stuck else None,
    }


def _waiting(status: Status, scene: Scene, judging: Judging | None, now: datetime) -> tuple[Reason, str] | None:
    if judging is not None:
        return Reason.JUDGING_EXIT, (
            f"{judging.cause.describe()}; until {format_time(judging.until)} the operator waits for a lost node or a "
            "deleted pod to show a disruption caused it, else it is a failure"
        )
    until = not_before(status)
    if until is not None and now < until:
        return Reason.BACKING_OFF, (
            f"the restart after failure {status.failures} waits until {format_time(until)} (the wait doubles with "
            "each failure, as the Job controller's)"
        )
    grace = scene.spec.node_lost_grace_seconds
    old = blockers(status, scene.pods, scene.nodes, grace, now)
    if old:
        last = max((p.deleted for p in old if p.deleted), default=None)
        by = f", by {format_time(last)} at the latest" if last else ""
        return Reason.PREVIOUS_ATTEMPT_TERMINATING, (
            f"waiting for {_names(old)} of the previous attempt to stop (on SIGTERM they save a checkpoint to resume "
            f"from){by}"
        )
    return _node_trouble(status, scene) or _not_started(status, scene)


def _node_trouble(status: Status, scene: Scene) -> tuple[Reason, str] | None:
    grace = scene.spec.node_lost_grace_seconds
    for p in attempt_pods(status, scene.pods):
        found = trouble(p, scene.nodes)
        if found is not None and not p.finished_or_failed and not p.terminating:
            at = found.since + timedelta(seconds=grace)
            return Reason.NODE_NOT_READY, (
                f"pod {p.name}: {found.what} since {format_time(found.since)}; unless it recovers, the group "
                f"restarts on other nodes at {format_time(at)} (spec.nodeLostGraceSeconds: {grace}s)"
            )
    return None


def _not_started(status: Status, scene: Scene) -> tuple[Reason, str] | None:
    limit = timedelta(seconds=scene.spec.startup_deadline_seconds)
    for p in attempt_pods(status, scene.pods):
        why = p.waiting_reason
        if p.started or p.terminating or not why or why in STARTING:
            continue
        fails = f"; the attempt fails at {format_time(p.created + limit)} (startupDeadlineSeconds)" if p.created else ""
        detail = f": {p.waiting_message}" if p.waiting_message else ""
        if why == Reason.UNSCHEDULABLE:
            return Reason.UNSCHEDULABLE, f"pod {p.name} cannot be scheduled{detail}{fails}"
        return Reason.POD_NOT_STARTED, f"pod {p.name}: {why}{detail}{fails}"
    return None


def _stuck(status: Status, scene: Scene, now: datetime) -> str | None:
    grace = scene.spec.node_lost_grace_seconds
    pods = [p for p in _not_current(status, scene.pods) if p.terminating and not p.finished_or_failed]
    stuck = [p for p in pods if is_abandoned(p, scene.nodes, grace, now)]
    return "; ".join(_stuck_message(p, scene) for p in stuck) or None


def _stuck_message(pod: PodView, scene: Scene) -> str:
    found = trouble(pod, scene.nodes)
    why = f"past its deletion at {format_time(pod.deleted)}"
    if found is not None:
        why = f"{found.what} since {format_time(found.since)}"
    return (
        f"pod {pod.name} on node {pod.node or '(none)'} stays Terminating ({why}); the job goes on without it. It "
        f"goes when the node returns or is deleted, or now with kubectl delete pod {pod.name} --force --grace-period=0"
    )


def _not_current(status: Status, pods: Sequence[PodView]) -> list[PodView]:
    current = set(map(id, attempt_pods(status, pods))) if status.phase in RUNNING_PHASES else set()
    return [p for p in pods if id(p) not in current]


def _names(pods: Sequence[PodView]) -> str:
    names = sorted(p.name for p in pods)
    return f"pod {names[0]}" if len(names) == 1 else f"pods {', '.join(names)}"


def wake_times(status: Status, scene: Scene, judging: Judging | None) -> list[datetime]:
    """When a clock, not an observation, could change these conditions or the verdict: a judged exit, the backoff,
    a node's pods counting as lost, an earlier pod counting as abandoned."""
    grace = scene.spec.node_lost_grace_seconds
    times = [judging.until] if judging else []
    until = not_before(status)
    if until is not None:
        times.append(until)
    if status.phase in RUNNING_PHASES:
        times += [t for p in attempt_pods(status, scene.pods) if (t := lost_at(p, scene.nodes, grace))]
    unfinished = [p for p in _not_current(status, scene.pods) if not p.finished_or_failed]
    times += [t for p in unfinished if (t := abandoned_at(p, scene.nodes, grace))]
    return times
