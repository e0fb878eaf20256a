"""What the operator keeps of each observed pod: a small frozen view built from the pod object.

The view holds only what the state machine reads, so an operator with thousands of pods in its index stays
small, and it is built once per pod event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .naming import LABEL_ATTEMPT, LABEL_INDEX, LABEL_JOB, LABEL_PHASE, PodPhase
from .spec import API_VERSION, KIND
from .timefmt import parse_time

CONTAINER = "trainer"


@dataclass(frozen=True, slots=True)
class PodView:
    """One child pod, as last observed.

    ``status`` is the pod's ``status.phase`` (Pending, Running, Succeeded, Failed, Unknown). ``terminating`` is
    true once a deletion was requested (``deleted`` is the pod's ``deletionTimestamp``: the request's time plus its
    grace period, when the kubelet must have stopped it). ``owner`` is the uid of the PreferenceTrainingJob its
    controller owner reference names (``None`` without one): labels say which job a pod claims to belong to, anyone
    may set them; only a pod whose owner is the job's uid counts for the job.

    ``node`` is the node it is bound to; ``not_ready_since`` when a running pod's ``Ready`` condition turned
    ``False`` (the node lifecycle controller marks the pods of a node it lost so; trainer pods have no readiness
    probe); ``disruption`` the reason of its ``DisruptionTarget`` condition (Kubernetes 1.26+: preemption, an
    eviction, the taint manager, pod GC); ``pod_reason`` the pod's own ``status.reason`` (``Evicted`` by a kubelet
    under node pressure, ``Preempting``, ``Terminated`` at a node shutdown) and ``pod_message`` its message, apart
    from the container's.
    """

    name: str
    job: str
    phase: PodPhase
    index: int
    attempt: int
    status: str
    created: datetime | None
    terminating: bool = False
    ip: str | None = None
    waiting_reason: str | None = None
    waiting_message: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    finished: datetime | None = None
    owner: str | None = None
    node: str | None = None
    deleted: datetime | None = None
    not_ready_since: datetime | None = None
    disruption: str | None = None
    pod_reason: str | None = None
    pod_message: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "Succeeded"

    @property
    def failed(self) -> bool:
        return self.status == "Failed"

    @property
    def finished_or_failed(self) -> bool:
        return self.status in ("Succeeded", "Failed")

    @property
    def started(self) -> bool:
        """Past the startup stage: running or done."""
        return self.status in ("Running", "Succeeded", "Failed")


def pod_view(pod: Mapping[str, Any]) -> PodView | None:
    """Build a :class:`PodView` from a pod object; ``None`` when it is not one of ours (labels missing)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    try:
        phase = PodPhase(labels[LABEL_PHASE])
        index, attempt = int(labels[LABEL_INDEX]), int(labels.get(LABEL_ATTEMPT, "1"))
        job = str(labels[LABEL_JOB])
    except (KeyError, ValueError):
        return None
    status = pod.get("status") or {}
    container = _container_status(status)
    state = container.get("state") or {}
    waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
    return PodView(
        name=str(meta.get("name")),
        job=job,
        phase=phase,
        index=index,
        attempt=attempt,
        status=str(status.get("phase") or "Pending"),
        created=parse_time(meta.get("creationTimestamp")),
        terminating=meta.get("deletionTimestamp") is not None,
        deleted=parse_time(meta.get("deletionTimestamp")),
        ip=status.get("podIP"),
        waiting_reason=waiting.get("reason") or _unschedulable(status, "reason"),
        waiting_message=waiting.get("message") or _unschedulable(status, "message"),
        exit_code=terminated.get("exitCode"),
        reason=terminated.get("reason") or status.get("reason"),
        message=(terminated.get("message") or status.get("message") or "").strip() or None,
        finished=parse_time(terminated.get("finishedAt")),
        owner=_controller_uid(meta),
        node=(pod.get("spec") or {}).get("nodeName") or None,
        not_ready_since=_not_ready_since(status),
        disruption=_condition(status, "DisruptionTarget", "True", "reason"),
        pod_reason=status.get("reason") or None,
        pod_message=status.get("message") or None,
    )


def _controller_uid(meta: Mapping[str, Any]) -> str | None:
    """The uid of the PreferenceTrainingJob that controls the object (its controller owner reference)."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == KIND and ref.get("apiVersion") == API_VERSION:
            return str(ref.get("uid") or "") or None
    return None


def _container_status(status: Mapping[str, Any]) -> Mapping[str, Any]:
    statuses = status.get("containerStatuses") or []
    for cs in statuses:
        if cs.get("name") == CONTAINER:
            return dict(cs)
    return dict(statuses[0]) if statuses else {}


def _condition(status: Mapping[str, Any], type_: str, value: str, field: str) -> str | None:
    """``field`` of the pod condition ``type_`` while its status is ``value``."""
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == value:
            found = cond.get(field)
            return str(found) if found else None
    return None


def _unschedulable(status: Mapping[str, Any], field: str) -> str | None:
    return _condition(status, "PodScheduled", "False", field)


def _not_ready_since(status: Mapping[str, Any]) -> datetime | None:
    if status.get("phase") != "Running":
        return None
    return parse_time(_condition(status, "Ready", "False", "lastTransitionTime"))
