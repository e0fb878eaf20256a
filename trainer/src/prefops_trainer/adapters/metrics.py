"""Prometheus metrics every trainer process serves on ``/metrics``.

Port: ``PREFOPS_METRICS_PORT`` (default 9400) plus the process's local rank under torchrun, bound to
``PREFOPS_METRICS_ADDR`` (default 0.0.0.0); ``PREFOPS_METRICS_PORT=off`` serves nothing. Rank 0 carries the
training metrics; every rank its own throughput and memory. All series are labelled with ``job_name``,
``job_namespace`` and ``phase`` (plus ``rank`` for per-process series); not ``job``/``namespace``, which
Prometheus and its Kubernetes discovery put on every target. Training values are TRL's logged values,
one per optimizer step (TRL averages them over the step's micro-batches, so gradient accumulation is right).
``prefops_trainer_phase`` says which phase the process runs: each phase enters its own state when it starts, and
the command ends in ``done`` or ``failed``. After each evaluation on ``spec.dataset.evalSplit`` rank 0 serves
``prefops_trainer_eval_step`` and one ``prefops_trainer_eval_<metric>`` gauge per metric that evaluation reported
(docs/contract.md §7); the series of a metric it did not report are removed, so every eval series belongs to the
step in ``prefops_trainer_eval_step``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from prometheus_client import CollectorRegistry, Enum, Gauge, start_http_server

from ..core.algorithms import ALL_EVAL_METRICS

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

log = logging.getLogger(__name__)

Phase = Literal["precompute", "train", "export", "done", "failed"]
PHASES: tuple[Phase, ...] = ("precompute", "train", "export", "done", "failed")
LABELS = ("job_name", "job_namespace", "phase")

#: TRL log key → metric suffix (``prefops_trainer_<suffix>``).
TRAIN_GAUGES = {
    "loss": "loss",
    "rewards/chosen": "rewards_chosen",
    "rewards/rejected": "rewards_rejected",
    "rewards/accuracies": "reward_accuracy",
    "rewards/margins": "reward_margin",
    "logps/chosen": "logps_chosen",
    "logps/rejected": "logps_rejected",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
    "epoch": "epoch",
    "kl": "kl",
    "objective/kl": "kl",
    "objective/scores": "reward_score",
    "objective/scores_margin": "reward_score_margin",
    "completion_length": "completion_length",
}
HELP = {
    "loss": "Training loss at the last optimizer step.",
    "rewards_chosen": "Mean implicit reward of the chosen completions (beta * log-ratio to the reference).",
    "rewards_rejected": "Mean implicit reward of the rejected completions.",
    "reward_accuracy": "Fraction of pairs whose chosen reward exceeds the rejected reward.",
    "reward_margin": "Mean chosen minus rejected reward.",
    "logps_chosen": "Mean summed log-probability of the chosen completions under the policy.",
    "logps_rejected": "Mean summed log-probability of the rejected completions under the policy.",
    "learning_rate": "Learning rate at the last optimizer step.",
    "grad_norm": "Gradient norm before clipping at the last optimizer step.",
    "epoch": "Fractional epoch reached.",
    "kl": "KL estimate between the policy and the reference (KTO's batch KL, Online DPO's per-sequence KL).",
    "reward_score": "Online DPO: mean reward-model score of the generated completions.",
    "reward_score_margin": "Online DPO: mean reward-model score of the chosen minus the rejected generation.",
    "completion_length": "Online DPO: mean length in tokens of the generated completions.",
    "step": "Optimizer steps done.",
    "total_steps": "Optimizer steps the training phase will run.",
    "precompute_pairs_done": "Preference pairs whose reference log-probs this process has computed.",
    "precompute_pairs_total": "Preference pairs this process computes of its pod's precompute shard.",
}


def eval_suffix(metric: str) -> str:
    """The metric suffix of one evaluation metric: ``rewards/accuracies`` → ``eval_rewards_accuracies`` (every
    character a Prometheus name cannot hold becomes ``_``)."""
    return "eval_" + re.sub(r"[^a-zA-Z0-9_]", "_", metric)


#: The evaluation gauges: the step of the latest evaluation, and each metric TRL reports when it evaluates.
EVAL_STEP = "eval_step"
EVAL_GAUGES = {metric: eval_suffix(metric) for metric in ALL_EVAL_METRICS}
HELP |= {EVAL_STEP: "Optimizer step of the latest evaluation on spec.dataset.evalSplit."}
HELP |= {
    suffix: f"Evaluation on spec.dataset.evalSplit: {metric}, as TRL reports it."
    for metric, suffix in EVAL_GAUGES.items()
}


@dataclass
class TrainerMetrics:
    job: str
    namespace: str
    rank: int = 0
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.gauges = {
            name: Gauge(f"prefops_trainer_{name}", text, LABELS, registry=self.registry) for name, text in HELP.items()
        }
        self.memory = Gauge(
            "prefops_trainer_memory_bytes",
            "Memory of this process: rss (host), and on GPU allocated/reserved.",
            (*LABELS, "rank", "kind"),
            registry=self.registry,
        )
        self.rank_tps = Gauge(
            "prefops_trainer_tokens_per_second",
            "Tokens (prompts and completions) this rank processed per second of training.",
            (*LABELS, "rank"),
            registry=self.registry,
        )
        self.phase_enum = Enum(
            "prefops_trainer_phase",
            "The phase this process is running.",
            ("job_name", "job_namespace"),
            states=list(PHASES),
            registry=self.registry,
        )
        self.phase: Phase = "precompute"

    def set_phase(self, phase: Phase) -> None:
        self.phase = phase
        self.phase_enum.labels(self.job, self.namespace).state(phase)

    def set(self, name: str, value: float) -> None:
        self.gauges[name].labels(self.job, self.namespace, self.phase).set(value)

    def record_logs(self, logs: dict[str, float | None], step: int) -> None:
        """Record one TRL log entry (rank 0 only)."""
        for key, suffix in TRAIN_GAUGES.items():
            value = logs.get(key)
            if value is not None:
                self.set(suffix, float(value))
        self.set("step", step)

    def record_eval(self, values: dict[str, float], step: int) -> None:
        """Serve one evaluation (rank 0 only): ``values`` are TRL's metric names without ``eval_``; the gauges of
        metrics it lacks (or whose value is not a finite number) are removed."""
        labels = (self.job, self.namespace, self.phase)
        for metric, suffix in EVAL_GAUGES.items():
            value = values.get(metric)
            if value is not None and math.isfinite(value):
                self.set(suffix, float(value))
            else:
                self.gauges[suffix].remove(*labels)  # a no-op when there is none
        self.set(EVAL_STEP, step)

    def record_memory(self) -> None:
        labels = (self.job, self.namespace, self.phase, str(self.rank))
        rss = _rss_bytes()
        self.memory.labels(*labels, "rss").set(rss)
        try:
            import torch

            if torch.cuda.is_available():
                self.memory.labels(*labels, "gpu_allocated").set(torch.cuda.memory_allocated())
                self.memory.labels(*labels, "gpu_reserved").set(torch.cuda.memory_reserved())
        except ImportError:  # pragma: no cover - torch is a dependency
            pass

    def record_rank_throughput(self, tokens_per_second: float) -> None:
        self.rank_tps.labels(self.job, self.namespace, self.phase, str(self.rank)).set(tokens_per_second)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


_current: TrainerMetrics | None = None
_server: WSGIServer | None = None


def serve(job: str, namespace: str) -> TrainerMetrics:
    """Create this process's metrics and serve them (once per process); later calls return the same object."""
    global _current
    if _current is not None:
        return _current
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    rank = int(os.environ.get("RANK", "0"))
    _current = TrainerMetrics(job, namespace, rank=rank)
    port_env = os.environ.get("PREFOPS_METRICS_PORT", "9400").strip().lower()
    if port_env in ("off", "false", "no", ""):
        return _current
    addr = os.environ.get("PREFOPS_METRICS_ADDR", "0.0.0.0")
    base = int(port_env)
    port = 0 if base == 0 else base + local_rank
    global _server
    try:
        _server, _ = start_http_server(port, addr=addr, registry=_current.registry)
        log.info("metrics on http://%s:%d/metrics", addr, _server.server_port)
    except OSError as e:
        log.warning("metrics not served: cannot bind %s:%d (%s)", addr, port, e)
    return _current


def current() -> TrainerMetrics | None:
    return _current


def enter(phase: Phase) -> None:
    """Report that this process now runs ``phase`` (no-op when it serves no metrics)."""
    if _current is not None:
        _current.set_phase(phase)


@contextmanager
def paused() -> Iterator[None]:
    """Stop serving while child processes (torchrun ranks) take the port over; serve again afterwards."""
    global _server
    if _server is None:
        yield
        return
    port, addr = _server.server_port, str(_server.server_address[0])
    _server.shutdown()
    _server.server_close()
    _server = None
    try:
        yield
    finally:
        if _current is not None:
            try:
                _server, _ = start_http_server(port, addr=addr, registry=_current.registry)
            except OSError as e:
                log.warning("metrics not served again on %s:%d: %s", addr, port, e)
