"""What to create and delete so the children match a (just written) status. Pure and idempotent: planning again
from the same observation plans the same actions, and every action is safe to repeat.

- A running phase wants its ConfigMap (and, for training, the Service) and one pod per replica of the current
  attempt (each attempt's pods have names of their own). Pods of an older attempt, or active pods of another
  phase, are deleted. The current group is created once the backoff after a failure has passed and, after a
  graceful disruption or a resume, once the earlier group's pods have stopped (they save a checkpoint on SIGTERM)
  or are abandoned on a lost node (:mod:`.restarts`); replicas it waits for are ``waiting``. Once the whole group
  ran, a missing replica is never recreated alone: the state machine restarts the group. A pod the job does not
  control (``foreign``: labelled as the job's but without its owner reference, e.g. left by a deleted job of the
  same name) is never touched; a name it holds is ``blocked`` until it goes.
- Suspended deletes the pods that are not done; Failed deletes the ones still running, keeping finished pods
  for their logs; Succeeded keeps everything.
- A finished job past ``ttlSecondsAfterFinished`` is deleted (its children go with it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .admission import pod_sizing
from .children import ChildSettings, config_map, network_policy, pod, training_service
from .naming import config_map_name, network_policy_name, pod_name, service_name
from .nodes import NodeView
from .phases import Phase, PodPhase, of_pods
from .pods import PodView
from .restarts import blockers, not_before
from .spec import Job
from .status import PHASE_KEYS, Status


@dataclass(frozen=True)
class NewPod:
    """A pod to create: replica ``name`` of attempt ``attempt``, and its manifest."""

    name: str
    attempt: int
    manifest: dict[str, Any]


@dataclass(frozen=True)
class Child:
    """A child made once and never changed (ConfigMap, NetworkPolicy, Service): its kind and name, and its manifest,
    built only when it is to be created (the trainer config's YAML, built on every reconcile, was a tenth of the
    operator's CPU with 1,000 jobs starting)."""

    kind: str
    name: str
    manifest: Callable[[], dict[str, Any]]

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class Plan:
    ensure: tuple[Child, ...] = ()  # ConfigMap/NetworkPolicy/Service: create when absent, never changed afterwards
    create_pods: tuple[NewPod, ...] = ()
    delete_pods: tuple[str, ...] = ()
    delete_job: bool = False
    waiting: tuple[str, ...] = field(default=())  # replicas waiting for the backoff or the previous group
    blocked: tuple[str, ...] = field(default=())  # replicas whose name is held by a pod the job does not control


def plan(
    job: Job,
    status: Status,
    pods: Sequence[PodView],
    settings: ChildSettings,
    now: datetime,
    foreign: Sequence[PodView] = (),
    nodes: Mapping[str, NodeView] | None = None,
) -> Plan:
    """What to do so the children of ``job`` (its own ``pods``) match ``status``."""
    phase = status.phase
    pod_phase = phase.pod_phase
    if pod_phase is not None:
        held = _held(job, status, pods, nodes or {}, now)
        return _plan_running(job, status, pod_phase, pods, settings, {p.name for p in foreign}, held)
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


def _held(job: Job, status: Status, pods: Sequence[PodView], nodes: Mapping[str, NodeView], now: datetime) -> bool:
    """Whether the current group waits: for the backoff after a failure, or for the previous group's pods."""
    until = not_before(status)
    if until is not None and now < until:
        return True
    return bool(blockers(status, pods, nodes, job.spec.node_lost_grace_seconds, now))


def _plan_running(
    job: Job,
    status: Status,
    pod_phase: PodPhase,
    pods: Sequence[PodView],
    settings: ChildSettings,
    taken: set[str],
    held: bool,
) -> Plan:
    attempt = status.attempt
    current = [p for p in pods if p.phase == pod_phase and p.attempt == attempt]
    stale = [
        p
        for p in pods
        if not p.terminating
        and ((p.phase == pod_phase and p.attempt != attempt) or (p.phase != pod_phase and not p.finished_or_failed))
    ]
    present = {p.index for p in current}
    trained = status.phases.get(PHASE_KEYS[Phase.TRAINING])
    trained_attempt = trained.attempt if trained else None
    creates, waiting, blocked = [], [], []
    row = of_pods(pod_phase)
    for index in range(row.size(job.spec)):
        name = pod_name(job.meta.name, pod_phase, index, attempt)
        if name in taken:
            blocked.append(name)
        elif index in present or status.group_running_time is not None:
            continue  # there, or gone once the group ran: the state machine restarts the group
        elif held:
            waiting.append(name)
        else:
            manifest = pod(
                job, pod_phase, index, attempt, settings, trained_attempt, pod_sizing(status.plan, pod_phase.value)
            )
            creates.append(NewPod(name, attempt, manifest))
    name = job.meta.name
    ensure = [Child("ConfigMap", config_map_name(name), lambda: config_map(job))]
    if settings.network_policy:
        ensure.append(Child("NetworkPolicy", network_policy_name(name), lambda: network_policy(job, settings)))
    if row.service:
        ensure.append(Child("Service", service_name(name), lambda: training_service(job, settings)))
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
