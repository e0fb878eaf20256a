"""The operator's sweep metrics (``prefops_operator_sweep*``), collected from the sweep controller's last written
statuses at each scrape. Trial series carry ``job_namespace``/``job_name``, the labels of the trainer's own series,
so a dashboard joins a sweep's trials with their ``prefops_trainer_*`` curves."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..core.sweep_status import TRIAL_PHASES, SweepPhase, SweepStatus

#: (namespace, sweep) → (its last status, its objective metric)
Statuses = Callable[[], Mapping[tuple[str, str], tuple[SweepStatus, str]]]
SWEEP = ["sweep_namespace", "sweep"]
TRIAL = [*SWEEP, "job_namespace", "job_name"]


class SweepCollector(Collector):
    def __init__(self, statuses: Statuses) -> None:
        self.statuses = statuses

    def collect(self) -> Iterator[Metric]:
        sweeps = GaugeMetricFamily("prefops_operator_sweeps", "PreferenceTrainingSweeps the operator tracks, by phase.",
                                   labels=["phase"])  # fmt: skip
        trials = GaugeMetricFamily("prefops_operator_sweep_trials", "Trials of each sweep, by phase (Waiting: not "
                                   "created yet).", labels=[*SWEEP, "phase"])  # fmt: skip
        info = GaugeMetricFamily("prefops_operator_sweep_trial_info", "1 for every trial of a sweep; join it with "
                                 "prefops_trainer_* series on (job_namespace, job_name).", labels=TRIAL)  # fmt: skip
        objective = GaugeMetricFamily("prefops_operator_sweep_trial_objective", "Each trial's latest value of its "
                                      "sweep's objective metric.", labels=[*TRIAL, "metric"])  # fmt: skip
        statuses = self.statuses()
        phases = Tally(status.phase for status, _ in statuses.values())
        for sweep_phase in SweepPhase:
            sweeps.add_metric([sweep_phase.value], phases.get(sweep_phase, 0))
        for (namespace, name), (status, metric) in sorted(statuses.items()):
            counts = Tally(t.phase for t in status.trials)
            for phase in TRIAL_PHASES:
                trials.add_metric([namespace, name, phase], counts.get(phase, 0))
            for t in status.trials:
                info.add_metric([namespace, name, namespace, t.name], 1)
                if t.objective is not None:
                    objective.add_metric([namespace, name, namespace, t.name, metric], t.objective)
        yield from (sweeps, trials, info, objective)


def register(registry: CollectorRegistry, statuses: Statuses) -> None:
    registry.register(SweepCollector(statuses))
