"""What to create and delete so the children match a (just written) status. Pure and idempotent: planning again
from the same observation plans the same actions, and every action is safe to repeat.

- A running phase wants its ConfigMap (and, for training, the Service) and one pod per replica of the current
  attempt. Pods of an older attempt, or active pods of another phase, are deleted; a replica is created only
  once no pod holds its name (a restarted group starts after the old one is gone, never beside it). A pod the job
  does not control (``foreign``: labelled as the job's but without its owner reference, e.g. left by a deleted
  job of the same name) is never touched; a name it holds is ``blocked`` until it goes.
- Suspended deletes the pods that are not done; Failed deletes the ones still running, keeping finished pods
  for their logs; Succeeded keeps everything.
- A finished job past ``ttlSecondsAfterFinished`` is deleted (its children go with it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .admission import pod_sizing
from .children import ChildSettings, config_map, network_policy, pod, training_service
from .machine import group_size
from .naming import PodPhase, pod_name
from .pods import PodView
from .spec import Job
from .status import Phase, Status


@dataclass(frozen=True)
class NewPod:
    """A pod to create: replica ``name`` of attempt ``attempt``, and its manifest."""

    name: str
    attempt: int
    manifest: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    ensure: tuple[dict[str, Any], ...] = ()  # ConfigMap/Service: create when absent, never changed afterwards
    create_pods: tuple[NewPod, ...] = ()
    delete_pods: tuple[str, ...] = ()
    delete_job: bool = False
    waiting: tuple[str, ...] = field(default=())  # replicas whose name is still held by a pod being deleted
    blocked: tuple[str, ...] = field(default=())  # replicas whose name is held by a pod the job does not control


def plan(
    job: Job,
    status: Status,
    pods: Sequence[PodView],
    settings: ChildSettings,
    now: datetime,
    foreign: Sequence[PodView] = (),
) -> Plan:
    """What to do so the children of ``job`` (its own ``pods``) match ``status``."""
    phase = status.phase
    pod_phase = phase.pod_phase
    if pod_phase is not None:
        return _plan_running(job, status, pod_phase, pods, settings, {p.name for p in foreign})
    if phase == Phase.SUSPENDED:
        return Plan(delete_pods=_names(p for p in pods if not p.succeeded and not p.terminating))
    if phase == Phase.FAILED:
        return Plan(
            delete_pods=_names(p for p in pods if not p.finished_or_failed and not p.terminating),
            delete_job=_ttl_expired(job, status, now),
        )
    if phase == Phase.SUCCEEDED:
        return Plan(delete_job=_ttl_expired(job, status, now))
    return Plan()


def _plan_running(
    job: Job, status: Status, pod_phase: PodPhase, pods: Sequence[PodView], settings: ChildSettings, taken: set[str]
) -> Plan:
    attempt = status.attempt
    stale = [
        p
        for p in pods
        if not p.terminating
        and ((p.phase == pod_phase and p.attempt != attempt) or (p.phase != pod_phase and not p.finished_or_failed))
    ]
    held = {p.name for p in pods}
    sizing = pod_sizing(status.plan, pod_phase.value)
    creates, waiting, blocked = [], [], []
    for index in range(group_size(job.spec, pod_phase)):
        name = pod_name(job.meta.name, pod_phase, index)
        if name in taken:
            blocked.append(name)
        elif name not in held:
            creates.append(NewPod(name, attempt, pod(job, pod_phase, index, attempt, settings, sizing)))
        elif any(p.name == name and (p.terminating or p in stale) for p in pods):
            waiting.append(name)
    ensure = [config_map(job)]
    if settings.network_policy:
        ensure.append(network_policy(job, settings))
    if pod_phase == PodPhase.TRAIN:
        ensure.append(training_service(job, settings))
    return Plan(
        ensure=tuple(ensure),
        create_pods=tuple(creates),
        delete_pods=_names(stale),
        waiting=tuple(waiting),
        blocked=tuple(blocked),
    )


def _ttl_expired(job: Job, status: Status, now: datetime) -> bool:
    ttl = job.spec.ttl_seconds_after_finished
    if ttl is None or status.completion_time is None:
        return False
    return now >= status.completion_time + timedelta(seconds=ttl)


def _names(pods: Any) -> tuple[str, ...]:
    return tuple(sorted(p.name for p in pods))
