"""What a phase is, in one table. Pure.

A job runs its phases in the order of :data:`PHASES`, each as a group of pods running one trainer subcommand. A row
says everything the operator knows of a phase: its status name and condition reasons, its pods (the
``prefops.dev/phase`` label, the name part and the trainer subcommand), how many, their command and GPUs, whether
they rendezvous through the job's headless Service or read the trained weights, when a job runs the phase at all,
and the Running condition's message. The state machine (:mod:`.transitions`, :mod:`.classify`), the children
(:mod:`.children`, :mod:`.plan`) and the status (:mod:`.status`) read it; adding a phase is a row here, the enum
members it names, and the trainer's subcommand (docs/development.md, "Add a phase").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from .algorithms import ALGORITHMS
from .spec import JobSpec


class PodPhase(str, Enum):
    """The trainer phase a pod runs; also the ``prefops.dev/phase`` label and the trainer subcommand."""

    PRECOMPUTE = "precompute"
    TRAIN = "train"
    EXPORT = "export"


class Phase(str, Enum):
    """``status.phase``: the running phases of :data:`PHASES`, and where a job waits or ends."""

    PENDING = "Pending"
    PRECOMPUTING = "Precomputing"
    TRAINING = "Training"
    EXPORTING = "Exporting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"

    @property
    def pod_phase(self) -> PodPhase | None:
        """The pods a running phase runs; ``None`` for the others."""
        row = _BY_STATUS.get(self)
        return row.pod if row else None

    @property
    def finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


@dataclass(frozen=True)
class RunningPhase:
    """One phase of a job: a group of pods running ``prefops-trainer <pod> <config>``."""

    status: Phase  # status.phase while it runs, and the Running condition's reason
    pod: PodPhase  # the pods' prefops.dev/phase label, their name part, the subcommand and the status.phases key
    started_reason: str  # the reason of the Event that starts it
    size: Callable[[JobSpec], int]  # how many pods its group has
    message: Callable[[JobSpec], str]  # the Running condition's message while it runs
    runs: Callable[[JobSpec], bool] = lambda spec: True  # whether the job runs it at all
    sharded: bool = False  # replica i of n reads shard i: ``--shard i --num-shards n``
    max_gpus: int | None = None  # GPUs per pod at most (None: spec.resources.gpusPerNode, a training node's)
    service: bool = False  # its pods rendezvous (torchrun) through the job's headless Service
    processes: bool = False  # each pod runs one process per GPU (PREFOPS_NPROC_PER_NODE), the service's pods too
    reads_trained: bool = False  # its pods read the finished training attempt's weights (PREFOPS_TRAINED_ATTEMPT)

    @property
    def reason(self) -> str:
        """The Running condition's reason while it runs: its status name."""
        return self.status.value

    @property
    def key(self) -> str:
        """Its ``status.phases`` key: the subcommand its pods run."""
        return self.pod.value

    def args(self, config: str, index: int, size: int) -> list[str]:
        """The trainer's arguments for replica ``index`` of ``size``."""
        shard = ["--shard", str(index), "--num-shards", str(size)] if self.sharded else []
        return [self.pod.value, config, *shard]

    def gpus(self, gpus_per_node: int) -> int:
        return gpus_per_node if self.max_gpus is None else min(gpus_per_node, self.max_gpus)


def _precomputes(spec: JobSpec) -> bool:
    """Precompute runs for reference-based losses, unless ``spec.reference.precompute`` says otherwise."""
    if spec.reference.precompute is not None:
        return spec.reference.precompute
    rule = ALGORITHMS.get(spec.algorithm.name)
    return bool(rule and rule.reference_based)


def _training(spec: JobSpec) -> str:
    res = spec.resources
    return f"training {spec.algorithm.name} on {res.nodes} pod(s) x {res.gpus_per_node} GPU(s)"


#: the phases, in the order a job runs them
PHASES: tuple[RunningPhase, ...] = (
    RunningPhase(
        Phase.PRECOMPUTING,
        PodPhase.PRECOMPUTE,
        "PrecomputingStarted",
        size=lambda spec: spec.reference.workers,
        message=lambda spec: f"precomputing reference log-probs on {spec.reference.workers} pod(s)",
        runs=_precomputes,
        sharded=True,
        processes=True,  # a torchrun of its own in each pod: each process computes a part of the pod's shard
    ),
    RunningPhase(
        Phase.TRAINING,
        PodPhase.TRAIN,
        "TrainingStarted",
        size=lambda spec: spec.resources.nodes,
        message=_training,
        service=True,
        processes=True,
    ),
    RunningPhase(
        Phase.EXPORTING,
        PodPhase.EXPORT,
        "ExportingStarted",
        size=lambda spec: 1,
        message=lambda spec: f"merging and exporting to {spec.output_uri}",
        max_gpus=1,  # merging LoRA is one process
        reads_trained=True,
    ),
)
_BY_STATUS = {row.status: row for row in PHASES}
_BY_POD = {row.pod: row for row in PHASES}
RUNNING_PHASES: tuple[Phase, ...] = tuple(_BY_STATUS)
#: the phase whose pods the job's headless Service selects
RENDEZVOUS: RunningPhase = next(row for row in PHASES if row.service)


def running(phase: Phase) -> RunningPhase:
    """The row of a running phase."""
    return _BY_STATUS[phase]


def of_pods(pod_phase: PodPhase) -> RunningPhase:
    """The row of the phase whose pods run ``pod_phase``."""
    return _BY_POD[pod_phase]


def phase_plan(spec: JobSpec) -> tuple[Phase, ...]:
    """The running phases of the job, in order."""
    return tuple(row.status for row in PHASES if row.runs(spec))


def group_size(spec: JobSpec, phase: PodPhase) -> int:
    """How many pods a phase's group has."""
    return of_pods(phase).size(spec)
