"""The operator's own Prometheus metrics (``prefops_operator_*``), served on their own port."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..core.status import Phase


class _JobsByPhase(Collector):
    def __init__(self, phases: Callable[[], Mapping[tuple[str, str], Phase]]) -> None:
        self.phases = phases

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "prefops_operator_jobs", "PreferenceTrainingJobs the operator tracks, by phase.", labels=["phase"]
        )
        counts = Tally(self.phases().values())
        for phase in Phase:
            family.add_metric([phase.value], counts.get(phase, 0))
        yield family


class OperatorMetrics:
    """All operator metrics in one registry (not the global one, so tests can make several)."""

    def __init__(self, phases: Callable[[], Mapping[tuple[str, str], Phase]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_JobsByPhase(phases))
        self.transitions = Counter(
            "prefops_operator_phase_transitions_total",
            "Job phase transitions (a restart is Training -> Training).",
            ["from_phase", "to_phase"],
            registry=self.registry,
        )
        self.restarts = Counter(
            "prefops_operator_restarts_total",
            "Pod groups recreated, by phase, kind (Failure: charged to backoffLimit; Disruption: to disruptionLimit),"
            " reason (NodeLost, Preempted, Evicted, Drained, Deleted, Interrupted; Error, OOMKilled, ...) and the node"
            " of the pod that caused it.",
            ["phase", "kind", "reason", "node"],
            registry=self.registry,
        )
        self.recovery = Histogram(
            "prefops_operator_restart_recovery_seconds",
            "Seconds from a restart to every pod of the new group running, by phase and kind.",
            ["phase", "kind"],
            buckets=(1, 2, 5, 10, 20, 30, 60, 90, 120, 180, 300, 600, 1200),
            registry=self.registry,
        )
        self.reconcile = Histogram(
            "prefops_operator_reconcile_duration_seconds",
            "Time to reconcile one job once (decide and act).",
            ["result"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "prefops_operator_job_duration_seconds",
            "Time from a job's creation to its success or failure.",
            ["result"],
            buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800),
            registry=self.registry,
        )
        self.api_errors = Counter(
            "prefops_operator_api_errors_total",
            "Kubernetes API calls that failed: conflict (a stale read, retried at once), gone, rejected (the spec's"
            " fault), forbidden (RBAC or an admission plugin such as a quota), temporary (retried with backoff).",
            ["kind"],
            registry=self.registry,
        )

    def serve(self, port: int, addr: str) -> None:
        if port:
            start_http_server(port, addr=addr, registry=self.registry)
