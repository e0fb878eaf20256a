"""What the code really exports, for the dashboard tests: the trainer's and the operator's metrics objects,
exercised through their own methods, rendered by ``prometheus_client.generate_latest`` as Prometheus scrapes
them, and read back into samples.

The trainer's evaluation gauges (``prefops_trainer_eval_*``, docs/contract.md §7) come from its own
``record_eval``, as the train phase calls it after each evaluation (tests/contract checks it serves one for every
metric the operator reads).

Label values that come from a closed set are taken from the code too: the trainer's phases
(``prefops_trainer.adapters.metrics.PHASES``), the memory kinds ``record_memory`` writes (with CUDA reported available, so
the GPU kinds appear), the operator's ``Phase`` enum, the results its reconciler records (read from the
reconciler's source with ``ast``) and its API error kinds."""

from __future__ import annotations

import ast
import inspect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from unittest import mock

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

#: labels whose values are names (of jobs, namespaces, ranks), not a closed set
#: labels whose values are open (names, numbers, a container's reason): no closed set to hold a dashboard to
FREE_LABELS = frozenset(
    {"job_name", "job_namespace", "rank", "le", "quantile", "sweep", "sweep_namespace", "node", "reason"}
)


@dataclass(frozen=True)
class Sample:
    name: str  # the sample's name as scraped: with _total, _bucket, _sum, _count, _created where it has one
    labels: tuple[tuple[str, str], ...]
    value: float
    family: str  # the family name (a counter's without _total)
    type: str

    def series(self, **extra: str) -> str:
        labels = {**dict(self.labels), **extra}
        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        return f"{self.name}{{{inner}}}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def samples(registry) -> list[Sample]:
    """The samples a scrape of ``registry`` returns, read back from the exposition text."""
    text = generate_latest(registry).decode()
    return [
        Sample(s.name, tuple(sorted(s.labels.items())), float(s.value), family.name, family.type)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


# ---------------------------------------------------------------------------------------------------- trainer
def trainer_registry(
    job: str,
    namespace: str,
    *,
    rank: int = 0,
    phase: str = "train",
    logs: dict | None = None,
    step: int = 0,
    total_steps: int | None = None,
    tokens_per_second: float | None = None,
    memory: bool = True,
    precompute: tuple[int, int] | None = None,
    cuda: bool = False,
    evaluation: tuple[dict[str, float], int] | None = None,
):
    """One trainer process's registry, driven the way the phases drive it (precompute.py, train.py);
    ``evaluation``: (metric → value as TRL names it, step) of the latest evaluation, rank 0."""
    from prefops_trainer.adapters.metrics import TrainerMetrics

    m = TrainerMetrics(job, namespace, rank=rank)
    if precompute is not None:  # the precompute phase: no set_phase; the gauges carry phase="precompute"
        m.set("precompute_pairs_total", precompute[1])
        m.set("precompute_pairs_done", precompute[0])
    if phase != "precompute":
        m.set_phase(phase)
    if total_steps is not None:  # on_train_begin, on every rank
        m.set("total_steps", total_steps)
        m.set("step", step)
    if logs is not None:  # on_log, rank 0
        m.record_logs(logs, step)
    if evaluation is not None:  # on_evaluate, rank 0
        m.record_eval(*evaluation)
    if tokens_per_second is not None:
        m.record_rank_throughput(tokens_per_second)
    if memory:
        with _cuda(cuda):
            m.record_memory()
    return m.registry


def _cuda(available: bool):
    import torch

    if not available:
        return mock.patch.object(torch.cuda, "is_available", return_value=False)
    patches = [
        mock.patch.object(torch.cuda, "is_available", return_value=True),
        mock.patch.object(torch.cuda, "memory_allocated", return_value=3 << 30),
        mock.patch.object(torch.cuda, "memory_reserved", return_value=4 << 30),
    ]

    class Both:
        def __enter__(self):
            for p in patches:
                p.start()

        def __exit__(self, *exc):
            for p in reversed(patches):
                p.stop()

    return Both()


def trainer_everything() -> list[Sample]:
    """Every series the trainer can export: every gauge set in every phase, memory with and without CUDA,
    throughput, and the phase enum in each of its states."""
    from prefops_trainer.adapters.metrics import HELP, PHASES, TrainerMetrics

    out: list[Sample] = []
    for phase in PHASES:
        m = TrainerMetrics("job", "ns", rank=1)
        m.set_phase(phase)
        for name in HELP:
            m.set(name, 1.0)
        m.record_rank_throughput(100.0)
        for cuda in (False, True):
            with _cuda(cuda):
                m.record_memory()
        out += samples(m.registry)
    return out


# ---------------------------------------------------------------------------------------------------- operator
def reconcile_results() -> list[str]:
    """The ``result`` values ``Reconciler.reconcile`` observes its histogram with, read from its source."""
    from prefops_operator.reconciler import Reconciler

    tree = ast.parse(inspect.getsource(Reconciler))
    fn = next(
        n for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef | ast.FunctionDef) and n.name == "reconcile"
    )
    found = []
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                names = target.elts if isinstance(target, ast.Tuple) else [target]
                values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
                for n, v in zip(names, values, strict=False):
                    if isinstance(n, ast.Name) and n.id == "result" and isinstance(v, ast.Constant):
                        found.append(v.value)
    return sorted(set(found))


def api_error_kinds() -> list[str]:
    """The kinds the reconciler counts in ``prefops_operator_api_errors_total``, read from its source."""
    from prefops_operator import reconciler

    tree = ast.parse(inspect.getsource(reconciler))
    kinds = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "labels"
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr == "api_errors"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            kinds.add(node.args[0].value)
    return sorted(kinds)


def sweep_status(phases: dict[str, str], objectives: dict[str, float], sweep_phase: str = "Running"):
    """A sweep's status as the sweep reconciler keeps it: trial name → phase, trial name → objective value."""
    from prefops_operator.core.sweep_status import SweepPhase, SweepStatus, TrialRecord

    trials = tuple(
        TrialRecord(name, i, {"algorithm.beta": 0.1 * (i + 1)}, phase, objective=objectives.get(name))
        for i, (name, phase) in enumerate(phases.items())
    )
    return SweepStatus(SweepPhase(sweep_phase), trials)


def operator_registry(
    jobs: dict[tuple[str, str], str],
    *,
    transitions: Iterable[tuple[str, str]] = (),
    restarts: Iterable[tuple[str, str, str, str]] = (),
    recoveries: Iterable[tuple[str, str, float]] = (),
    reconciles: Iterable[tuple[str, float]] = (),
    durations: Iterable[tuple[str, float]] = (),
    api_errors: Iterable[str] = (),
    sweeps: dict[tuple[str, str], tuple[object, str]] | None = None,
):
    """The operator's registry (``OperatorMetrics``, as the reconciler makes it, with the sweep collector the sweep
    reconciler registers) after these events; ``jobs``: (namespace, name) → phase value, what the reconciler's phase
    map holds; ``sweeps``: (namespace, name) → (its status, its objective metric), what the sweep reconciler holds."""
    from prefops_operator.adapters import sweep_metrics
    from prefops_operator.adapters.metrics import OperatorMetrics
    from prefops_operator.core.conditions import RestartKind
    from prefops_operator.core.status import Phase

    phases = {key: Phase(value) for key, value in jobs.items()}
    m = OperatorMetrics(lambda: phases)
    sweep_metrics.register(m.registry, lambda: dict(sweeps or {}))  # type: ignore[arg-type]
    for source, target in transitions:  # reconciler: transitions.labels(t.source.value, t.target.value)
        m.transitions.labels(Phase(source).value, Phase(target).value).inc()
    for phase, kind, reason, node in restarts:  # reconciler: restarts.labels(t.source.value, r.kind, r.reason, node)
        m.restarts.labels(Phase(phase).value, RestartKind(kind).value, reason, node).inc()
    for phase, kind, seconds in recoveries:  # reconciler: recovery.labels(phase, kind).observe(resume seconds)
        m.recovery.labels(Phase(phase).value, RestartKind(kind).value).observe(seconds)
    for result, seconds in reconciles:
        m.reconcile.labels(result).observe(seconds)
    for phase, seconds in durations:  # reconciler: job_duration.labels(t.target.value.lower()) when finished
        assert Phase(phase).finished
        m.job_duration.labels(Phase(phase).value.lower()).observe(seconds)
    for kind in api_errors:
        m.api_errors.labels(kind).inc()
    return m.registry


def operator_everything() -> list[Sample]:
    """Every series the operator can export, with every label value its code can write."""
    from prefops_operator.core.algorithms import ALL_EVAL_METRICS
    from prefops_operator.core.conditions import DisruptionReason, FailureReason, RestartKind
    from prefops_operator.core.status import Phase
    from prefops_operator.core.sweep_status import TRIAL_PHASES, SweepPhase

    RESTART_REASONS = [*(r.value for r in DisruptionReason), *(r.value for r in FailureReason), "Error", "OOMKilled"]

    trials = {f"t-{phase}": phase for phase in TRIAL_PHASES}  # a trial in every phase, each with an objective
    every_sweep = {  # a sweep in every phase; every metric an objective can name
        ("ns", f"sweep-{i}"): (sweep_status(trials, dict.fromkeys(trials, 0.5), list(SweepPhase)[i % 5].value), metric)
        for i, metric in enumerate(ALL_EVAL_METRICS)
    }
    results, kinds = reconcile_results(), api_error_kinds()
    assert results and kinds, "the reconciler's result / API error kinds were not found in its source"
    registry = operator_registry(
        {("ns", p.value): p.value for p in Phase},
        transitions=[(a.value, b.value) for a in Phase for b in Phase],
        restarts=[
            (p.value, k.value, reason, "node-a") for p in Phase for k in RestartKind for reason in RESTART_REASONS
        ],
        recoveries=[(p.value, k.value, 30.0) for p in Phase for k in RestartKind],
        reconciles=[(r, 0.01) for r in results],
        durations=[(p.value, 600.0) for p in Phase if p.finished],
        api_errors=kinds,
        sweeps=every_sweep,
    )
    return samples(registry)


# ---------------------------------------------------------------------------------------------------- catalogue
@dataclass
class Catalogue:
    """Metric name (as scraped) → label → the values the code writes."""

    labels: dict[str, dict[str, set[str]]]

    @classmethod
    def of(cls, all_samples: Iterable[Sample]) -> Catalogue:
        labels: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for s in all_samples:
            entry = labels[s.name]
            for k, v in s.labels:
                entry[k].add(v)
        return cls({name: dict(v) for name, v in labels.items()})

    @property
    def names(self) -> set[str]:
        return set(self.labels)
