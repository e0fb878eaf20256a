"""kopf glue of the sweep controller: watch sweeps and their trial jobs (PreferenceTrainingJobs labelled
``prefops.dev/sweep``) into kopf indices, and turn every event into a work-queue key of the sweep. Started and
stopped with the job controller by :mod:`.handlers`; like it, no change handlers and no kopf state on objects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from prometheus_client import CollectorRegistry

from .adapters.sweeps import SweepKubeApi
from .config import OperatorConfig
from .core.sweep_spec import slim_sweep
from .core.sweep_status import TrialView, trial_view
from .core.sweep_trials import LABEL_SWEEP
from .runtime import WorkQueue
from .sweep_reconciler import Key, SweepReconciler

SWEEPS = ("prefops.dev", "v1alpha1", "preferencetrainingsweeps")
JOBS = ("prefops.dev", "v1alpha1", "preferencetrainingjobs")
TRIALS = {LABEL_SWEEP: kopf.PRESENT}


class SweepRuntime:
    """The sweeps' work queue wired to their reconciler and to kopf's indices of sweeps and trial jobs."""

    def __init__(
        self,
        reconciler: SweepReconciler,
        sweeps: Mapping[Key, Iterable[Mapping[str, Any]]],
        trials: Mapping[Key, Iterable[TrialView]],
        workers: int,
    ) -> None:
        self.reconciler, self.sweeps, self.trials = reconciler, sweeps, trials
        self.queue: WorkQueue[Key] = WorkQueue(self._process, workers)

    async def _process(self, key: Key) -> float | None:
        body = next(iter(self.sweeps.get(key, ())), None)
        delay = await self.reconciler.reconcile(key, body, tuple(self.trials.get(key, ())))
        if body is None:
            self.queue.forget(key)
        return delay


def start(api: SweepKubeApi, config: OperatorConfig, registry: CollectorRegistry, indices: Any) -> SweepRuntime:
    """The sweep controller, started; ``indices`` are the keyword arguments kopf passes the startup handler."""
    runtime = SweepRuntime(
        SweepReconciler(api, registry), indices["sweeps_index"], indices["trials_index"], config.workers
    )
    runtime.queue.start()
    return runtime


@kopf.index(*SWEEPS, id="sweeps_index")
async def sweeps_index(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(str(namespace), name): slim_sweep(body)}


@kopf.index(*JOBS, labels=TRIALS, id="trials_index")
async def trials_index(
    *, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> dict[Key, TrialView]:
    return {(str(namespace), labels[LABEL_SWEEP]): trial_view(body)}


@kopf.on.event(*SWEEPS, id="sweep-event")
async def sweep_event(*, namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    if "sweeps" in memo:
        memo.sweeps.queue.add((str(namespace), name))


@kopf.on.event(*JOBS, labels=TRIALS, id="trial-event")
async def trial_event(*, namespace: str | None, labels: Mapping[str, str], memo: kopf.Memo, **_: Any) -> None:
    if "sweeps" in memo:
        memo.sweeps.queue.add((str(namespace), labels[LABEL_SWEEP]))
