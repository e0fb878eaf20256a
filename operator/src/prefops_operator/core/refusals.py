"""Why the apiserver refused to create a child, and whether retrying can help. Pure.

A refused create must never leave a job looking like it runs while nothing does: the reconciler records the
refusal, the state machine shows it (a ``ReplicaFailure`` condition and a Warning Event while it is retried, or a
``Failed`` job where a retry cannot help), and the reconciler backs off between attempts.

The apiserver's admission plugins answer 403 with these messages (Kubernetes 1.20 and later):

- ResourceQuota: ``exceeded quota: <name>, requested: ..., used: ..., limited: ...`` (or ``status unknown for
  quota`` before its controller has counted): retried, the quota may free up as other work finishes;
- ServiceAccount: ``error looking up service account <ns>/<name>: serviceaccount "<name>" not found``: the job's
  own ``serviceAccountName`` fails the job; the namespace's ``default`` account is retried (a new namespace gets it
  a moment after it is created);
- Priority: ``no PriorityClass with name <name> was found``: fails the job;
- anything else that is 403 (the operator's own RBAC, an admission webhook): retried, an administrator's fix.

400 and 422 (the manifest itself is invalid, e.g. a malformed toleration) fail the job with ``InvalidSpec``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .conditions import Reason
from .spec import JobSpec

FORBIDDEN = 403
MAX_BACKOFF = 60.0


@dataclass(frozen=True)
class Refusal:
    """Why children cannot be created now: ``reason`` (a :class:`Reason`), the apiserver's message, and whether a
    retry cannot help (``permanent``)."""

    reason: Reason
    message: str
    permanent: bool


def classify_refusal(status: int, message: str, spec: JobSpec) -> Refusal:
    """A refusal of HTTP ``status`` with the apiserver's ``message``, for a child of a job with ``spec``."""
    if status != FORBIDDEN:
        return Refusal(Reason.INVALID_SPEC, message, permanent=True)
    text = message.lower()
    if "error looking up service account" in text:
        named = spec.resources.service_account_name is not None
        return Refusal(Reason.SERVICE_ACCOUNT_NOT_FOUND, message, permanent=named)
    if "no priorityclass with name" in text:
        return Refusal(Reason.PRIORITY_CLASS_NOT_FOUND, message, permanent=True)
    return forbidden(message)


def forbidden(message: str) -> Refusal:
    """A 403 that no field of the spec causes, always retried: a ResourceQuota's, else any other (the operator's
    RBAC, an admission webhook, the owner-reference check). A sweep's trial jobs meet only these."""
    text = message.lower()
    if "exceeded quota" in text or "status unknown for quota" in text:
        return Refusal(Reason.QUOTA_EXCEEDED, message, permanent=False)
    return Refusal(Reason.CREATE_FORBIDDEN, message, permanent=False)


def name_taken(names: Sequence[str]) -> Refusal:
    """The refusal to wait on while objects the job does not control hold names it needs (``names`` such as
    ``pod x``): a deleted job of the same name whose children are not gone yet, or objects someone else made."""
    return Refusal(
        Reason.NAME_TAKEN,
        f"{', '.join(names)} exist(s) but not controlled by this job (no owner reference with its uid); "
        "waiting for them to be deleted",
        permanent=False,
    )


def backoff(attempts: int, base: float = 1.0) -> float:
    """Seconds to wait before the next create after ``attempts`` refused ones in a row: doubling, at most
    :data:`MAX_BACKOFF`."""
    return min(base * 2.0 ** max(attempts - 1, 0), MAX_BACKOFF)
