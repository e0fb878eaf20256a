"""The names the job's status and Events speak: condition types and CamelCase reasons, as constants. Pure.

The state machine, the reconciler, the docs and the tests use these, never the bare strings; the CRD's
``status.conditions`` descriptions list them (``tests/operator/test_crd_schema.py`` checks that).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import Enum

from .status import Condition


class _Name(str, Enum):
    """A string constant: equal to, formatted as and serialized as its value."""

    def __str__(self) -> str:
        return str(self.value)


class ConditionType(_Name):
    """``status.conditions[].type``."""

    FEASIBLE = "Feasible"  # the admission's memory plan (core.admission): True fits, False does not, Unknown none
    RUNNING = "Running"  # a phase's pods are (being) run
    SUSPENDED = "Suspended"  # spec.suspend is true
    SUCCEEDED = "Succeeded"  # the model is written
    FAILED = "Failed"  # the job ended without a model
    # the apiserver refuses a child (a quota, ...) or an object the job does not control holds a name it needs:
    # present only while it lasts, retried with backoff
    REPLICA_FAILURE = "ReplicaFailure"
    # the current pod group waits for something (a backoff, the previous attempt's pods, the scheduler, a node that
    # stopped reporting, a rank's exit to be judged): present only while it waits, the reason says what for
    WAITING = "Waiting"
    # pods of the job stay Terminating on a lost node (or long past their grace period): the job goes on without
    # them; present only while they last
    PODS_STUCK = "PodsStuck"
    # the spec was changed in a field that cannot change once the job started: the job goes on with the spec it
    # started with; present only while the edit stands
    SPEC_CHANGE_REFUSED = "SpecChangeRefused"


class Reason(_Name):
    """``status.conditions[].reason`` and the reason of the Event recorded with each transition."""

    # Running while a phase runs, and the Event that starts it: each phase's own (.phases.PHASES: its status name,
    # and its started_reason)
    # the job succeeded: Running False / the Event, and the Succeeded condition's reason
    SUCCEEDED = "Succeeded"
    EXPORTED = "Exported"
    # pausing and continuing
    SUSPENDED = "Suspended"
    RESUMED = "Resumed"
    # a failed pod group is recreated (a Warning Event; Running stays True)
    RESTARTING = "Restarting"
    # a disrupted pod group (node lost, preempted, evicted, drained, deleted) is recreated (a Warning Event)
    DISRUPTED = "Disrupted"
    # every pod of a recreated group runs (a Normal Event with the seconds it took)
    RECOVERED = "Recovered"
    # why a job failed
    INVALID_SPEC = "InvalidSpec"  # the user's spec is wrong (the operator's checks, or a manifest the API refuses)
    INVALID_INPUT = "InvalidInput"  # the trainer exited 2: the input data or model is wrong
    WONT_FIT = "WontFit"  # the memory plan does not fit the GPUs (spec.resources.fitCheck: enforce); Feasible False
    # the Feasible condition's other reasons
    FITS = "Fits"
    PLAN_SKIPPED = "PlanSkipped"  # no plan or no verdict: the model's config.json or the GPUs' memory is unknown
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    DISRUPTION_LIMIT_EXCEEDED = "DisruptionLimitExceeded"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    GATE_NOT_MET = "GateNotMet"  # the final evaluation missed spec.output.gate: nothing was published
    # why the apiserver refused a child: ReplicaFailure while retried, Failed where a retry cannot help
    QUOTA_EXCEEDED = "QuotaExceeded"  # a ResourceQuota: retried until it has room
    SERVICE_ACCOUNT_NOT_FOUND = "ServiceAccountNotFound"  # spec.resources.serviceAccountName: fails the job
    PRIORITY_CLASS_NOT_FOUND = "PriorityClassNotFound"  # spec.resources.priorityClassName: fails the job
    CREATE_FORBIDDEN = "CreateForbidden"  # any other 403 (the operator's RBAC, an admission webhook): retried
    # a child's name is held by an object the job does not control (left by a deleted job of the same name, or
    # made by someone else): waited for, retried
    NAME_TAKEN = "NameTaken"
    # what the current group waits for (the Waiting condition)
    BACKING_OFF = "BackingOff"  # a restart after a failure waits, doubling from 10 s to 6 min as the Job controller
    PREVIOUS_ATTEMPT_TERMINATING = "PreviousAttemptTerminating"  # its pods save a checkpoint on SIGTERM first
    UNSCHEDULABLE = "Unschedulable"  # the scheduler cannot place a pod (its message says why)
    POD_NOT_STARTED = "PodNotStarted"  # a pod is scheduled but its container waits (ImagePullBackOff, ...)
    NODE_NOT_READY = "NodeNotReady"  # a pod's node stopped reporting; lost after spec.nodeLostGraceSeconds
    JUDGING_EXIT = "JudgingExit"  # a rank exited while others run: is a lost node or a deleted pod behind it?
    # the PodsStuck condition: a pod stays Terminating on a lost node or past its grace period
    STUCK_TERMINATING = "StuckTerminating"
    # the SpecChangeRefused condition: a field that cannot change once the job started was changed
    FIELD_IMMUTABLE = "FieldImmutable"


class SweepReason(_Name):
    """Reasons only a sweep's conditions and Events give (the sweep's CRD lists them)."""

    # ReplicaFailure while the operator checks the sweep's creator (--check-sweep-creators, core.creators)
    CREATOR_FORBIDDEN = "CreatorForbidden"  # the creator may not create the trials' jobs: no trial is created
    CREATOR_UNKNOWN = "CreatorUnknown"  # no creator recorded (created around the webhook): no trial is created


class RestartKind(_Name):
    """``status.lastRestart.kind``: what a restart is charged to."""

    FAILURE = "Failure"  # the trainer failed: spec.backoffLimit
    DISRUPTION = "Disruption"  # the cluster took a pod away: spec.disruptionLimit


class FailureReason(_Name):
    """``status.lastFailure.reason`` the operator sets itself (otherwise the pod's or container's own reason)."""

    FAILED = "Failed"  # the pod failed without saying why
    STARTUP_DEADLINE_EXCEEDED = "StartupDeadlineExceeded"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"  # no training step for progressDeadlineSeconds


class DisruptionReason(_Name):
    """``status.lastRestart.reason`` of a disruption: why the cluster took a pod of the group away."""

    NODE_LOST = "NodeLost"  # its node stopped reporting for longer than spec.nodeLostGraceSeconds
    PREEMPTED = "Preempted"  # a scheduler or kubelet preempted it for a pod of higher priority
    EVICTED = "Evicted"  # an eviction (the Eviction API, node pressure, a node shutdown, a NoExecute taint)
    DRAINED = "Drained"  # deleted or evicted while its node is cordoned (kubectl drain)
    DELETED = "Deleted"  # deleted by someone else (kubectl delete pod), or gone without a trace
    INTERRUPTED = "Interrupted"  # the trainer saved what it could and exited 75 ("resume me") with no other sign


def set_conditions(
    current: Sequence[Condition], now: datetime, updates: Mapping[ConditionType, tuple[str, str, str] | None]
) -> tuple[Condition, ...]:
    """``current`` with each named condition set to (status, reason, message), or removed where the update is
    ``None``; the transition time moves only when the status does. In :class:`ConditionType` order."""
    out = {c.type: c for c in current}
    for type_, update in updates.items():
        old = out.pop(type_, None)
        if update is None:
            continue
        status, reason, message = update
        since = now if old is None or old.status != status else old.last_transition_time
        out[type_] = Condition(type_, status, reason, message, since)
    order: list[str] = list(ConditionType)
    return tuple(sorted(out.values(), key=lambda c: order.index(c.type) if c.type in order else len(order)))
