"""Why a pod group restarts, what the restart is charged to, and how long the next group waits. Pure.

Every restart is a :class:`Cause`: a *failure* (the trainer exited non-zero, was OOM-killed, never started, stopped
making progress), charged to ``spec.backoffLimit`` and backed off as the Job controller does (10 s doubling to
6 min), or a *disruption* (the node was lost; the pod was preempted, evicted, drained or deleted; the trainer saved
what it could and exited 75), charged to ``spec.disruptionLimit`` and restarted at once. The tables below are the
whole policy: :data:`DISRUPTION_TARGETS` and :data:`KUBELET_REASONS` name what the cluster writes on a pod it takes
away, :data:`GRACEFUL` the disruptions after which the next group waits for the previous one to save a checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .conditions import DisruptionReason, FailureReason, RestartKind
from .health import Trouble, is_abandoned, trouble
from .nodes import NodeView
from .pods import PodView
from .settings import setting
from .status import Failure, Status
from .timefmt import format_time

INTERRUPTED_EXIT_CODE = 75  # the trainer's "interrupted: I saved what I could, resume me" (docs/contract.md §4)

#: the reason of a pod's DisruptionTarget condition (Kubernetes 1.26+) -> the disruption
DISRUPTION_TARGETS: Mapping[str, DisruptionReason] = {
    "PreemptionByKubeScheduler": DisruptionReason.PREEMPTED,  # 1.26
    "PreemptionByScheduler": DisruptionReason.PREEMPTED,
    "EvictionByEvictionAPI": DisruptionReason.EVICTED,  # kubectl drain, the cluster autoscaler
    "DeletionByTaintManager": DisruptionReason.EVICTED,  # a NoExecute taint the pod does not tolerate
    "DeletionByPodGC": DisruptionReason.NODE_LOST,  # its node is gone
    "TerminationByKubelet": DisruptionReason.EVICTED,  # node pressure or a graceful node shutdown
}
#: a pod's own status.reason, as its kubelet writes it -> the disruption
KUBELET_REASONS: Mapping[str, DisruptionReason] = {
    "Evicted": DisruptionReason.EVICTED,  # node pressure
    "Preempting": DisruptionReason.PREEMPTED,  # the kubelet made room for a critical pod
    "Terminated": DisruptionReason.EVICTED,  # a graceful node shutdown
    "Shutdown": DisruptionReason.EVICTED,
    "NodeShutdown": DisruptionReason.EVICTED,
}
#: a kubelet eviction that blames the pod itself (it wrote past its own ephemeral-storage or emptyDir limit): a failure
OWN_FAULT = ("exceeds the limit", "exceeds the total limit", "exceeded its local ephemeral storage limit")
#: disruptions where every rank got SIGTERM and saves a checkpoint at its next step: the next group waits for the
#: previous group's pods to stop. After NodeLost (the lost rank cannot join a checkpoint) and after failures the
#: next group starts from the last checkpoint without waiting.
GRACEFUL = frozenset(
    {
        DisruptionReason.PREEMPTED,
        DisruptionReason.EVICTED,
        DisruptionReason.DRAINED,
        DisruptionReason.DELETED,
        DisruptionReason.INTERRUPTED,
    }
)


def _non_negative(value: float) -> bool:
    return value >= 0


@dataclass(frozen=True)
class RestartSettings:
    """Operator-wide settings of restarts: part of :class:`prefops_operator.config.OperatorConfig`."""

    backoff: float = setting(
        10.0,
        "seconds the first restart after a failure waits; each further failure doubles it (the Job controller's "
        "schedule); 0: none",
        "--restart-backoff",
        "RESTART_BACKOFF",
        rule=_non_negative,
        rule_text=">= 0",
    )
    backoff_max: float = setting(
        360.0,
        "the longest a restart after a failure waits",
        "--restart-backoff-max",
        "RESTART_BACKOFF_MAX",
        rule=_non_negative,
        rule_text=">= 0",
    )
    exit_judging: float = setting(
        60.0,
        "seconds a rank's non-zero exit waits, while other ranks of its group still run, for a lost node or a deleted "
        "pod to show a disruption caused it (kube-controller-manager's --node-monitor-grace-period, 40 s by default, "
        "plus its --node-monitor-period and a margin)",
        "--exit-judging-seconds",
        "EXIT_JUDGING_SECONDS",
        rule=_non_negative,
        rule_text=">= 0",
    )

    def backoff_after(self, failures: int) -> timedelta:
        """How long the restart after the ``failures``-th failure waits."""
        return timedelta(seconds=min(self.backoff * 2.0 ** max(failures - 1, 0), self.backoff_max))


@dataclass(frozen=True)
class Cause:
    """Why the running group must restart: its kind, reason, the pod and node behind it, and what happened."""

    kind: RestartKind
    reason: str
    pod: str
    node: str | None
    message: str
    exit_code: int | None = None

    @property
    def waits_for_previous(self) -> bool:
        return self.reason in GRACEFUL

    def failure(self, phase: str, now: datetime | None) -> Failure:
        return Failure(self.pod, phase, self.reason, self.exit_code, self.message, now)

    def describe(self) -> str:
        if self.kind == RestartKind.FAILURE:
            return self.failure("", None).describe()
        where = f" on node {self.node}" if self.node else ""
        return f"pod {self.pod}{where}: {self.reason}: {self.message}"


# -- what happened to a pod ------------------------------------------------------------------------------------


def removal_reason(pod: PodView, nodes: Mapping[str, NodeView]) -> DisruptionReason:
    """Why someone else is deleting (or deleted) a pod of the running group."""
    node = nodes.get(pod.node) if pod.node else None
    reason = DISRUPTION_TARGETS.get(pod.disruption or "")
    if reason in (None, DisruptionReason.EVICTED) and node is not None and node.unschedulable:
        return DisruptionReason.DRAINED
    if reason is not None:
        return reason
    return DisruptionReason.NODE_LOST if trouble(pod, nodes) else DisruptionReason.DELETED


def removed(pod: PodView, nodes: Mapping[str, NodeView]) -> Cause:
    """A pod of the running group that someone else deletes while it runs."""
    reason = removal_reason(pod, nodes)
    detail = f" (DisruptionTarget: {pod.disruption})" if pod.disruption else ""
    return Cause(RestartKind.DISRUPTION, reason, pod.name, pod.node, f"deleted while running{detail}")


def ended(pod: PodView, nodes: Mapping[str, NodeView]) -> Cause:
    """A pod of the running group that exited non-zero (or was failed by its kubelet): a failure or a disruption."""
    message = pod.message or ""
    if pod.disruption or pod.terminating:
        reason = removal_reason(pod, nodes)
        return Cause(RestartKind.DISRUPTION, reason, pod.name, pod.node, _exit(pod, "deleted"), pod.exit_code)
    kubelet = KUBELET_REASONS.get(pod.pod_reason or "")
    if kubelet is not None:
        own = any(s in (pod.pod_message or "") for s in OWN_FAULT)
        kind, why = (RestartKind.FAILURE, str(pod.pod_reason)) if own else (RestartKind.DISRUPTION, str(kubelet))
        return Cause(kind, why, pod.name, pod.node, pod.pod_message or message, pod.exit_code)
    if pod.exit_code == INTERRUPTED_EXIT_CODE:
        return Cause(RestartKind.DISRUPTION, DisruptionReason.INTERRUPTED, pod.name, pod.node, _exit(pod), 75)
    return Cause(RestartKind.FAILURE, pod.reason or FailureReason.FAILED, pod.name, pod.node, message, pod.exit_code)


def _exit(pod: PodView, what: str = "") -> str:
    code = f"exited {pod.exit_code}" if pod.exit_code is not None else "failed"
    text = f"{what}, {code}" if what else code
    return f"{text}: {pod.message}" if pod.message else text


def lost(pod: PodView, found: Trouble, grace: int) -> Cause:
    message = f"{found.what} since {format_time(found.since)} (spec.nodeLostGraceSeconds: {grace}s)"
    return Cause(RestartKind.DISRUPTION, DisruptionReason.NODE_LOST, pod.name, pod.node, message)


def vanished(name: str) -> Cause:
    message = "gone while its group ran (force-deleted, or its node was removed)"
    return Cause(RestartKind.DISRUPTION, DisruptionReason.DELETED, name, None, message)


# -- the next group --------------------------------------------------------------------------------------------


def not_before(status: Status) -> datetime | None:
    """The earliest time the current attempt's pods may be created (the backoff after a failure)."""
    restart = status.last_restart
    if restart is None or restart.attempt != status.attempt:
        return None
    return restart.not_before


def waits_for_previous(status: Status) -> bool:
    """Whether the current group waits for the earlier groups' pods to stop before it is created: after a graceful
    disruption or a resume (their pods save a checkpoint on SIGTERM), not after a lost node or a failure."""
    restart = status.last_restart
    return restart is None or restart.attempt != status.attempt or restart.reason in GRACEFUL


def blockers(
    status: Status, pods: Sequence[PodView], nodes: Mapping[str, NodeView], grace: int, now: datetime
) -> list[PodView]:
    """Pods of earlier groups the current group waits for: still running or terminating, and not abandoned."""
    if not waits_for_previous(status):
        return []
    pod_phase = status.phase.pod_phase
    return [
        p
        for p in pods
        if not (p.phase == pod_phase and p.attempt == status.attempt)
        and not p.finished_or_failed
        and not is_abandoned(p, nodes, grace, now)
    ]
