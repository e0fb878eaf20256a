"""One reconcile of one job: parse → observe → decide → write status → act → report. A coroutine on kopf's event
loop (its only I/O is the awaited API calls and metrics scrapes); the kopf glue feeds it snapshots of the job and
its pods from kopf's indices.

The only memory kept between reconciles is an optimization and a guard, never a source of truth:

- the status last written (until the watch delivers it, a stale snapshot must not drive actions),
- children recently created or deleted but not yet observed (so a lagging index does not repeat the call),
- why the apiserver refused the last create (shown in the status, retried with backoff),
- the last progress scrape (its time, and the last sample of each precompute shard), and its next scrape's slot,
- the spec the job started with, as its ConfigMap holds it (read back after an operator restart).

Progress scrapes (each may write the job's status) are paced for all jobs together: a job is scraped at most every
``progressInterval`` seconds, and in a slot of its own, ``1 / progressWritesPerSecond`` after the previous job's,
so a thousand running jobs write their progress evenly, a bounded number of times a second, never in bursts.

Only pods whose controller owner reference carries the job's uid count for it: a job deleted and created again
under the same name, or a pod someone else labelled as the job's, can neither lend it progress nor skip a phase.

After an operator restart all of it is empty and the job's status plus its pods are enough to carry on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .adapters.kube import Conflict, Forbidden, Gone, KubeApi, Rejected, TemporaryError
from .adapters.metrics import OperatorMetrics
from .adapters.plan_sources import SourceReader
from .adapters.scrape import Scraper
from .config import OperatorConfig
from .core.admission import Admission, admit
from .core.algorithms import ALGORITHMS
from .core.evaluation import Evaluation, evaluation_from_metrics
from .core.frozen import effective_spec, spec_changes
from .core.machine import Decision, Observed, current_group, decide
from .core.memory import WrittenStatus, remember
from .core.naming import PodPhase, config_map_name
from .core.nodes import NodeView
from .core.patch import merge_patch
from .core.plan import NewPod, Plan, plan
from .core.pods import PodView
from .core.progress import precompute_progress, shard_counts, training_progress
from .core.refusals import Refusal, backoff, classify_refusal, name_taken
from .core.spec import InvalidSpec, Job, JobMeta, parse_job, parse_meta, parse_spec
from .core.status import RUNNING_PHASES, Phase, Progress, Status
from .core.timefmt import utcnow

log = logging.getLogger(__name__)

Key = tuple[str, str]
EXPECTATION_TTL = 30.0  # seconds a create/delete waits to be observed before it may be repeated
RETRY_SOON = 0.2


@dataclass
class _Memory(WrittenStatus):
    ensured: set[str] = field(default_factory=set)
    created: dict[tuple[str, int], float] = field(default_factory=dict)
    deleted: dict[str, float] = field(default_factory=dict)
    refusal: Refusal | None = None
    refused: int = 0  # creates refused in a row
    last_scrape: float = float("-inf")
    scrape_slot: float | None = None  # when this job's next scrape may run (monotonic), once it has one
    shard_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # precompute pod → its pair counts
    started: dict[str, Any] | None = None  # the spec the job started with (its ConfigMap's)
    started_read: bool = False
    admission: tuple[int, Admission] | None = None  # (generation, the plan made for it) while Pending


class Reconciler:
    def __init__(
        self,
        api: KubeApi,
        config: OperatorConfig,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], datetime] = utcnow,
        scraper: Scraper | None = None,
    ) -> None:
        self.api, self.config, self.clock = api, config, clock
        self.scraper = scraper or Scraper(config.scrape_timeout)
        self.sources = SourceReader(api, config.hub_endpoint, config.gpu_memory_label)
        self.metrics = metrics or OperatorMetrics(self.phases)
        self._memory: dict[Key, _Memory] = {}
        self._phases: dict[Key, Phase] = {}
        self._next_slot = float("-inf")  # the first free progress-scrape slot (monotonic)

    def phases(self) -> dict[Key, Phase]:
        """Phase of every job seen, for the jobs-by-phase gauge (a copy: safe from another thread)."""
        return dict(self._phases)

    def forget(self, key: Key) -> None:
        self._memory.pop(key, None)
        self._phases.pop(key, None)

    async def close(self) -> None:
        await self.api.close()
        await self.scraper.close()

    async def reconcile(
        self,
        key: Key,
        body: Mapping[str, Any] | None,
        pods: Sequence[PodView],
        nodes: Mapping[str, NodeView] | None = None,
    ) -> float | None:
        """Bring one job a step closer to its desired state; return seconds until it wants another look."""
        started, result = time.perf_counter(), "error"
        try:
            delay = await self._reconcile(key, body, pods, nodes or {})
            result = "ok"
            return delay
        except Conflict:
            result = "conflict"
            self.metrics.api_errors.labels("conflict").inc()
            return RETRY_SOON
        except Gone:
            result = "gone"
            self.metrics.api_errors.labels("gone").inc()
            self.forget(key)
            return None
        except TemporaryError:
            self.metrics.api_errors.labels("temporary").inc()
            raise
        finally:
            self.metrics.reconcile.labels(result).observe(time.perf_counter() - started)

    async def _reconcile(
        self, key: Key, body: Mapping[str, Any] | None, pods: Sequence[PodView], nodes: Mapping[str, NodeView]
    ) -> float | None:
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            self.forget(key)
            return None
        mem = remember(self._memory, key, body, _Memory)
        if mem.stale(body, time.monotonic()):
            return RETRY_SOON
        now = self.clock()
        job, spec_error = _parse(body)
        owned = [p for p in pods if p.owner == mem.uid]
        previous = Status.from_dict(body.get("status"))
        job, changes = await self._frozen(mem, job, previous)
        progress, evaluation = await self._scrape(mem, job, previous, owned, now) if job else (None, None)
        admission = await self._admit(mem, job) if job and previous.phase == Phase.PENDING else None
        observed = Observed(
            job, owned, spec_error, mem.refusal, progress, evaluation, nodes, self.config.restarts, changes, admission
        )
        decision = decide(previous, observed, now)
        events = await self._write(mem, job, body, decision, now) if decision.status != previous else None
        self._phases[key] = decision.status.phase
        if job is None:
            await (events or asyncio.sleep(0))
            return None
        foreign = [p for p in pods if p.owner != mem.uid]
        actions = plan(job, decision.status, owned, self.config.children, now, foreign, nodes)
        acting = self._act(job, mem, actions, owned)
        refusal = (await asyncio.gather(acting, events))[0] if events else await acting  # Events beside the pods
        return self._after_refusal(mem, refusal) or self._requeue_after(decision, mem, now)

    async def _admit(self, mem: _Memory, job: Job) -> Admission:
        """The memory plan of a Pending job (made once per generation): the model's config and the GPUs' memory
        read (:mod:`.adapters.plan_sources`), then planned (:mod:`.core.admission`)."""
        generation = job.meta.generation
        if mem.admission is None or mem.admission[0] != generation:
            mem.admission = (generation, admit(job.spec.raw, await self.sources.gather(job)))
        return mem.admission[1]

    async def _frozen(self, mem: _Memory, job: Job | None, status: Status) -> tuple[Job | None, tuple[str, ...]]:
        """The job with the spec it started with (its ConfigMap's), but for the fields that may change, and the
        fields changed that may not; the job as it is before it started and after it finished."""
        if job is None or not (status.phase in RUNNING_PHASES or status.phase == Phase.SUSPENDED):
            return job, ()
        if not mem.started_read:
            meta = job.meta
            mem.started = await self.api.config_spec(meta.namespace, config_map_name(meta.name), meta.uid)
            mem.started_read = True
        if mem.started is None:
            return job, ()
        changes = spec_changes(mem.started, job.spec.raw)
        if not changes:
            return job, ()
        try:
            return Job(job.meta, parse_spec(effective_spec(mem.started, job.spec.raw))), changes
        except InvalidSpec:  # what it started with no longer parses (an older operator wrote it): keep the current
            return job, ()

    def _after_refusal(self, mem: _Memory, refusal: Refusal | None) -> float | None:
        """Remember a refusal (the next decision shows it) and back off while it lasts; ``None`` when nothing was
        refused and nothing changed."""
        previous, mem.refusal = mem.refusal, refusal
        if refusal is None:
            mem.refused = 0
            return RETRY_SOON if previous is not None else None  # take the ReplicaFailure condition away
        mem.refused += 1
        return RETRY_SOON if refusal != previous else backoff(mem.refused)

    async def _write(
        self, mem: _Memory, job: Job | None, body: Mapping[str, Any], decision: Decision, now: datetime
    ) -> Awaitable[None]:
        """Write the status; return the posting of its Events (in order), which the caller runs beside the
        children's creation: they are a record, not a step the pods wait for."""
        meta = job.meta if job else parse_meta(body["metadata"])
        new = decision.status.to_dict()
        await self.api.patch_status(meta, merge_patch(body.get("status") or {}, new))
        mem.wrote(new, time.monotonic())
        events = []
        for t in decision.transitions:
            log.info(
                "%s/%s: %s -> %s (%s) %s",
                meta.namespace,
                meta.name,
                t.source.value,
                t.target.value,
                t.reason,
                t.message,
            )
            events.append((t.reason, t.message, t.warning))
            self.metrics.transitions.labels(t.source.value, t.target.value).inc()
            if t.restart is not None:
                r = t.restart
                self.metrics.restarts.labels(t.source.value, r.kind, r.reason, r.node or "").inc()
            if t.target.finished and meta.created:
                result = t.target.value.lower()
                self.metrics.job_duration.labels(result).observe((now - meta.created).total_seconds())
        recovered = decision.recovered
        if recovered is not None and recovered.resume_seconds is not None:
            phase = decision.status.phase.value
            self.metrics.recovery.labels(phase, recovered.kind).observe(recovered.resume_seconds)
        for n in decision.notices:
            log.warning("%s/%s: %s: %s", meta.namespace, meta.name, n.reason, n.message)
            events.append((n.reason, n.message, n.warning))
        return self._post_events(meta, events, now)

    async def _post_events(self, meta: JobMeta, events: Sequence[tuple[str, str, bool]], now: datetime) -> None:
        for reason, message, warning in events:
            await self.api.post_event(meta, reason, message, warning, now)

    async def _act(self, job: Job, mem: _Memory, actions: Plan, pods: Sequence[PodView]) -> Refusal | None:
        """Carry the plan out; why children could not be created, if they could not."""
        clock = time.monotonic()
        observed = {(p.name, p.attempt) for p in pods}
        names = {p.name for p in pods}
        mem.created = {k: t for k, t in mem.created.items() if t > clock and k not in observed}
        mem.deleted = {k: t for k, t in mem.deleted.items() if t > clock and k in names}
        for name in actions.delete_pods:
            if name not in mem.deleted:
                await self.api.delete_pod(job.meta.namespace, name)
                mem.deleted[name] = clock + EXPECTATION_TTL
        try:
            taken = [*await self._ensure(job, mem, actions), *(f"pod {n}" for n in actions.blocked)]
            await self._create_pods(mem, [n for n in actions.create_pods if (n.name, n.attempt) not in mem.created])
        except Rejected as e:
            self.metrics.api_errors.labels("rejected").inc()
            return classify_refusal(e.status, str(e), job.spec)
        except Forbidden as e:
            self.metrics.api_errors.labels("forbidden").inc()
            return classify_refusal(e.status, str(e), job.spec)
        if actions.delete_job:
            log.info("%s/%s: ttlSecondsAfterFinished passed, deleting the job", job.meta.namespace, job.meta.name)
            await self.api.delete_job(job.meta)
        return name_taken(taken) if taken else None

    async def _create_pods(self, mem: _Memory, pods: Sequence[NewPod]) -> None:
        """Create a group's pods at once (one round trip for the group, not one per pod); each created one is
        remembered, then the first refusal, if any, is raised."""
        results = await asyncio.gather(*(self.api.create(p.manifest) for p in pods), return_exceptions=True)
        expires = time.monotonic() + EXPECTATION_TTL
        for new, result in zip(pods, results, strict=True):
            if not isinstance(result, BaseException):
                mem.created[new.name, new.attempt] = expires
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _ensure(self, job: Job, mem: _Memory, actions: Plan) -> list[str]:
        """Create the ConfigMap and Service unless made before; the ones whose name another object holds."""
        taken = []
        for child in actions.ensure:
            kind, name = child.kind, child.name
            if child.key in mem.ensured:
                continue
            created = await self.api.create(child.manifest())
            if not created and await self.api.controller_uid(kind, job.meta.namespace, name) != job.meta.uid:
                taken.append(f"{kind.lower()} {name}")
                continue
            mem.ensured.add(child.key)
            if created and kind == "ConfigMap":
                mem.started, mem.started_read = dict(job.spec.raw), True
        return taken

    async def _scrape(
        self, mem: _Memory, job: Job, status: Status, pods: Sequence[PodView], now: datetime
    ) -> tuple[Progress | None, Evaluation | None]:
        if status.phase.pod_phase != PodPhase.PRECOMPUTE:
            mem.shard_metrics = {}  # the precompute phase is over (or not begun): its counts are not needed
        if status.phase not in RUNNING_PHASES or time.monotonic() - mem.last_scrape < self.config.progress_interval:
            return None, None
        group = [p for p in current_group(status, pods) if p.ip and p.status == "Running"]
        if not group or not self._slot_reached(mem):
            return None, None
        mem.last_scrape = time.monotonic()
        port = self.config.children.metrics_port
        if status.phase.pod_phase == PodPhase.PRECOMPUTE:
            scraped = await asyncio.gather(*(self.scraper.fetch(str(p.ip), port) for p in group))
            found = {p.name: shard_counts(s) for p, s in zip(group, scraped, strict=True) if s is not None}
            mem.shard_metrics.update(found)
            return precompute_progress(mem.shard_metrics.values(), now), None
        if group[0].index != 0:
            return None, None
        samples = await self.scraper.fetch(str(group[0].ip), port)
        if not samples:
            return None, None
        rule = ALGORITHMS.get(job.spec.algorithm.name)
        evaluation = evaluation_from_metrics(samples, rule.eval_metrics if rule else ())
        return training_progress(samples, now), evaluation

    def _slot_reached(self, mem: _Memory) -> bool:
        """Whether the job's scrape slot has come: the first call reserves the next free slot; once it has come,
        the slot is used up."""
        clock = time.monotonic()
        if mem.scrape_slot is None:
            mem.scrape_slot = max(clock, self._next_slot)
            self._next_slot = mem.scrape_slot + 1.0 / self.config.progress_writes_per_second
        if mem.scrape_slot > clock:
            return False
        mem.scrape_slot = None
        return True

    def _next_scrape_in(self, mem: _Memory) -> float:
        """Seconds until the job may be scraped next: its reserved slot, else ``progressInterval`` after its last
        scrape (``progressInterval`` when it has neither: its pods' events wake it when they run)."""
        interval, clock = self.config.progress_interval, time.monotonic()
        if mem.scrape_slot is not None:
            return max(mem.scrape_slot - clock, 0.05)
        if mem.last_scrape == float("-inf"):
            return interval
        return max(mem.last_scrape + interval - clock, 0.05)

    def _requeue_after(self, decision: Decision, mem: _Memory, now: datetime) -> float | None:
        delays = []
        if decision.wake_at is not None:
            delays.append((decision.wake_at - now).total_seconds() + 0.5)
        if decision.status.phase in RUNNING_PHASES:
            delays.append(self._next_scrape_in(mem))
        pending = [*mem.created.values(), *mem.deleted.values()]
        if pending:
            delays.append(min(pending) - time.monotonic() + 0.1)
        return max(min(delays), 0.05) if delays else None


def _parse(body: Mapping[str, Any]) -> tuple[Job | None, str | None]:
    try:
        return parse_job(body), None
    except InvalidSpec as e:
        return None, str(e)
