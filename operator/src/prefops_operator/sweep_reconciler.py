"""One reconcile of one sweep: parse → (check its trials' jobs with the apiserver, once) → decide → write status →
act → report. The glue in :mod:`.sweep_handlers` feeds it snapshots of the sweep and of its trial jobs.

Memory kept between reconciles is a guard, never a source of truth: the status last written (until the watch
delivers it), trial creates and suspend patches not yet observed (so a lagging index does not repeat them), and
the apiserver's refusals of trial jobs (reported in the next status). After an operator restart the sweep's status
and its trial jobs are enough to carry on.

With ``creator_key`` (``--check-sweep-creators``) no trial job is dry-run or created before a SubjectAccessReview
says the sweep's creator may create jobs (:mod:`.core.creators`); an "allowed" is trusted for :data:`REVIEW_TTL`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry

from .adapters import sweep_metrics
from .adapters.kube import Conflict, Forbidden, Gone, Rejected
from .adapters.sweeps import SweepKubeApi
from .core.creators import CreatorRefusal, access_review, creator_refusal, recorded_creator
from .core.memory import WrittenStatus, remember
from .core.patch import merge_patch
from .core.refusals import Refusal, backoff, forbidden
from .core.rules.userinfo import redact
from .core.spec import InvalidSpec, parse_meta
from .core.sweep_machine import SweepDecision, SweepObserved, decide, trials_to_check
from .core.sweep_spec import Sweep, parse_sweep
from .core.sweep_status import SweepPhase, SweepStatus, TrialView
from .core.sweep_trials import dropped_overrides, rejected, trial_manifest
from .core.timefmt import utcnow

log = logging.getLogger(__name__)

Key = tuple[str, str]
EXPECTATION_TTL = 30.0  # seconds a create/patch waits to be observed before it may be repeated
RETRY_SOON = 0.2
REVIEW_TTL = 10.0  # seconds a creator's "allowed" is trusted before the next trial create asks again


@dataclass
class _Memory(WrittenStatus):
    created: dict[str, float] = field(default_factory=dict)  # trial → when a repeated create is allowed
    patched: dict[tuple[str, bool], float] = field(default_factory=dict)  # (trial, suspend) → likewise
    refused: dict[str, str] = field(default_factory=dict)  # trial → the apiserver's refusal of its job
    # the last 403 to a trial job's dry-run or create, or refusal of the sweep's creator; none since it passed
    forbidden: Refusal | CreatorRefusal | None = None
    forbidden_times: int = 0  # refusals in a row
    retry_at: float = 0.0  # no dry-run or create of a trial job before this (monotonic), after a refusal
    creator_allowed_until: float = 0.0  # the creator's review said allowed; trusted until then (monotonic)

    def forbid(self, e: Forbidden, clock: float) -> None:
        self.hold(forbidden(redact(e.message)), clock)

    def hold(self, refusal: Refusal | CreatorRefusal, clock: float) -> None:
        self.forbidden, self.forbidden_times = refusal, self.forbidden_times + 1
        self.retry_at = clock + backoff(self.forbidden_times)

    def allow(self) -> None:
        self.forbidden, self.forbidden_times, self.retry_at = None, 0, 0.0

    def holding(self, clock: float) -> bool:
        """Whether a 403 holds back trial creates now."""
        return self.forbidden is not None and clock < self.retry_at


class SweepReconciler:
    def __init__(
        self,
        api: SweepKubeApi,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], datetime] = utcnow,
        creator_key: bytes | None = None,
    ) -> None:
        """``creator_key``: check each sweep's creator (``--check-sweep-creators``), whose record the webhook signed
        with this key; ``None``: do not."""
        self.api, self.clock, self.creator_key = api, clock, creator_key
        self._memory: dict[Key, _Memory] = {}
        self._statuses: dict[Key, tuple[SweepStatus, str]] = {}
        if registry is not None:
            sweep_metrics.register(registry, lambda: dict(self._statuses))

    def forget(self, key: Key) -> None:
        self._memory.pop(key, None)
        self._statuses.pop(key, None)

    async def reconcile(self, key: Key, body: Mapping[str, Any] | None, trials: Sequence[TrialView]) -> float | None:
        """Bring one sweep a step closer to its desired state; return seconds until it wants another look."""
        try:
            return await self._reconcile(key, body, trials)
        except Conflict:
            return RETRY_SOON
        except Gone:
            self.forget(key)
            return None

    async def _reconcile(self, key: Key, body: Mapping[str, Any] | None, trials: Sequence[TrialView]) -> float | None:
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            self.forget(key)
            return None
        mem = remember(self._memory, key, body, _Memory)
        if mem.stale(body, time.monotonic()):
            return RETRY_SOON
        now = self.clock()
        sweep, spec_error = _parse(body)
        previous = SweepStatus.from_dict(body.get("status"))
        views = {t.name: t for t in trials}
        pending = sweep is not None and previous.phase == SweepPhase.PENDING
        checked = await self._check(sweep, mem) if sweep and pending and not mem.holding(time.monotonic()) else ()
        observed = SweepObserved(sweep, spec_error, views, checked, dict(mem.refused), mem.forbidden)
        decision = decide(previous, observed, now)
        if decision.status != previous:
            await self._write(mem, body, decision, now)
        self._statuses[key] = (decision.status, sweep.spec.objective.metric if sweep else "")
        refused = await self._act(sweep, mem, decision, views) if sweep is not None else False
        return RETRY_SOON if refused else self._requeue_after(mem)

    async def _check(self, sweep: Sweep, mem: _Memory) -> tuple[str, ...]:
        """The apiserver's verdict on every trial's job, by dry-run creates: what the job schema rejects (422) or
        prunes (a path that is no field of the job spec). A 403 stops the check (``mem`` remembers it: the sweep
        waits, showing it, and the check is repeated after a backoff)."""
        problems: list[str] = []
        trials = trials_to_check(sweep)
        if trials and not await self._creator_may_create(sweep, mem):
            return ()
        for trial in trials:
            try:
                served = await self.api.create_job(trial_manifest(sweep, trial, sweep.spec.suspend), dry_run=True)
            except Rejected as e:
                problems.append(rejected(trial, str(e)))
                continue
            except Forbidden as e:
                mem.forbid(e, time.monotonic())
                return ()
            if served is not None:
                problems += dropped_overrides(trial, served.get("spec") or {})
        mem.allow()
        return tuple(problems)

    async def _write(self, mem: _Memory, body: Mapping[str, Any], decision: SweepDecision, now: datetime) -> None:
        meta = parse_meta(body["metadata"])
        new = decision.status.to_dict()
        await self.api.patch_sweep_status(meta, merge_patch(body.get("status") or {}, new))
        mem.wrote(new, time.monotonic())
        for event in decision.events:
            log.info("sweep %s/%s: %s %s", meta.namespace, meta.name, event.reason, event.message)
            await self.api.post_sweep_event(meta, event.reason, event.message, event.warning, now)

    async def _act(self, sweep: Sweep, mem: _Memory, decision: SweepDecision, views: Mapping[str, TrialView]) -> bool:
        """Create, suspend and resume trials; whether the apiserver refused a trial's job (to report at once)."""
        clock, refused = time.monotonic(), False
        mem.created = {n: t for n, t in mem.created.items() if t > clock and n not in views}
        mem.patched = {k: t for k, t in mem.patched.items() if t > clock and k[0] in views}
        create = () if mem.holding(clock) else decision.create
        if create and not await self._creator_may_create(sweep, mem):  # no trial; suspend and resume go on
            create, refused = (), mem.forbidden_times == 1  # report a new refusal at once
        for trial in create:
            if trial.name in mem.created or trial.name in mem.refused:
                continue
            try:
                await self.api.create_job(trial_manifest(sweep, trial, sweep.spec.suspend))
            except Forbidden as e:  # a quota, a webhook, RBAC: shown on the sweep, retried after a backoff
                log.warning("sweep %s/%s: creating trial %s forbidden: %s", *sweep.key, trial.name, redact(e.message))
                mem.forbid(e, clock)
                return refused or mem.forbidden_times == 1  # report a new refusal at once
            except Rejected as e:
                message = redact(str(e))  # the apiserver's message may quote an override's value
                log.warning("sweep %s/%s: trial %s refused: %s", *sweep.key, trial.name, message)
                mem.refused[trial.name], refused = message, True
                continue
            mem.created[trial.name] = clock + EXPECTATION_TTL
            mem.allow()
        for names, suspend in ((decision.suspend, True), (decision.resume, False)):
            for name in names:
                if (name, suspend) not in mem.patched:
                    await self.api.set_job_suspend(sweep.meta.namespace, name, suspend)
                    mem.patched[(name, suspend)] = clock + EXPECTATION_TTL
        return refused

    async def _creator_may_create(self, sweep: Sweep, mem: _Memory) -> bool:
        """Whether the sweep's trials may be created for its creator (always, unless creators are checked): a
        SubjectAccessReview of the creator the webhook recorded. A refusal holds the trials like a 403 does (a 403 to
        the review itself too: the operator may not create reviews)."""
        clock = time.monotonic()
        if self.creator_key is None or clock < mem.creator_allowed_until:
            return True
        namespace = sweep.meta.namespace
        creator = recorded_creator(sweep.creator_record, namespace, self.creator_key)
        try:
            review = await self.api.review_access(access_review(creator, namespace)) if creator else None
        except Forbidden as e:
            mem.forbid(e, clock)
            return False
        refusal = creator_refusal(creator, namespace, review)
        if refusal is not None:
            log.warning("sweep %s/%s: %s", *sweep.key, refusal.message)
            mem.hold(refusal, clock)
            return False
        mem.creator_allowed_until = clock + REVIEW_TTL
        return True

    def _requeue_after(self, mem: _Memory) -> float | None:
        pending = [*mem.created.values(), *mem.patched.values(), *([mem.retry_at] if mem.forbidden else [])]
        return max(min(pending) - time.monotonic() + 0.1, 0.05) if pending else None


def _parse(body: Mapping[str, Any]) -> tuple[Sweep | None, str | None]:
    try:
        return parse_sweep(body), None
    except InvalidSpec as e:
        return None, str(e)
