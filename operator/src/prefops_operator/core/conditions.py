"""The names the job's status and Events speak: condition types and CamelCase reasons, as constants. Pure.

The state machine, the reconciler, the docs and the tests use these, never the bare strings; the CRD's
``status.conditions`` descriptions list them (``tests/operator/test_crd_schema.py`` checks that).
"""

from __future__ import annotations

from enum import Enum

from .status import Phase


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


class Reason(_Name):
    """``status.conditions[].reason`` and the reason of the Event recorded with each transition."""

    # Running while a phase runs: the phase's name
    PRECOMPUTING = Phase.PRECOMPUTING.value
    TRAINING = Phase.TRAINING.value
    EXPORTING = Phase.EXPORTING.value
    # a phase started (Events)
    PRECOMPUTING_STARTED = "PrecomputingStarted"
    TRAINING_STARTED = "TrainingStarted"
    EXPORTING_STARTED = "ExportingStarted"
    # the job succeeded: Running False / the Event, and the Succeeded condition's reason
    SUCCEEDED = "Succeeded"
    EXPORTED = "Exported"
    # pausing and continuing
    SUSPENDED = "Suspended"
    RESUMED = "Resumed"
    # a failed pod group is recreated (a Warning Event; Running stays True)
    RESTARTING = "Restarting"
    # why a job failed
    INVALID_SPEC = "InvalidSpec"  # the user's spec is wrong (the operator's checks, or a manifest the API refuses)
    INVALID_INPUT = "InvalidInput"  # the trainer exited 2: the input data or model is wrong
    WONT_FIT = "WontFit"  # the memory plan does not fit the GPUs (spec.resources.fitCheck: enforce); Feasible False
    # the Feasible condition's other reasons
    FITS = "Fits"
    PLAN_SKIPPED = "PlanSkipped"  # no plan or no verdict: the model's config.json or the GPUs' memory is unknown
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
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


class FailureReason(_Name):
    """``status.lastFailure.reason`` the operator sets itself (otherwise the pod's or container's own reason)."""

    FAILED = "Failed"  # the pod failed without saying why
    STARTUP_DEADLINE_EXCEEDED = "StartupDeadlineExceeded"
    DELETED = "Deleted"  # a running rank was deleted by someone else (preemption, a drained node)


#: the Running condition's reason while each running phase runs, and the reason of the Event that starts it
RUNNING_REASON = {
    Phase.PRECOMPUTING: Reason.PRECOMPUTING,
    Phase.TRAINING: Reason.TRAINING,
    Phase.EXPORTING: Reason.EXPORTING,
}
STARTED_REASON = {
    Phase.PRECOMPUTING: Reason.PRECOMPUTING_STARTED,
    Phase.TRAINING: Reason.TRAINING_STARTED,
    Phase.EXPORTING: Reason.EXPORTING_STARTED,
}
