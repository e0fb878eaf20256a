"""Start the train phase under torchrun when the job has more than one process, or uses DeepSpeed; the precompute
phase when its pod runs more than one process, or computes under ZeRO-3 (:func:`torchrun_precompute`).

DeepSpeed needs a distributed environment even for one process: without torchrun's (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``...) it falls back to MPI discovery and dies without ``mpi4py``. A DeepSpeed job of one process is
therefore a torchrun job of world size one, with the same SIGTERM forwarding and exit codes as a larger one.

The rendezvous comes from the environment the operator sets (docs/contract.md): ``PREFOPS_NNODES``,
``PREFOPS_NODE_RANK``, ``PREFOPS_NPROC_PER_NODE``, ``PREFOPS_MASTER_ADDR``, ``PREFOPS_MASTER_PORT``. Locally
they default to one node with ``spec.resources`` processes and a free port. Without CUDA the ranks use gloo
and DeepSpeed's CPU accelerator (``DS_ACCELERATOR=cpu``); with CUDA, NCCL.

Timeouts: the rendezvous waits ``spec.startupDeadlineSeconds`` for every node (as long as the operator waits for a pod
to start); on SIGTERM, passed on to torchrun, torchrun waits for its ranks to save a checkpoint and stop for
``PREFOPS_TERMINATION_GRACE_SECONDS`` (the pod's grace period; locally ``spec.resources.terminationGracePeriodSeconds``)
less :data:`LAUNCHER_MARGIN_SECONDS`, then kills them.
The ranks leave a word for this process in a scratch folder (``PREFOPS_ERROR_DIR``): ``rank-<r>``, a user error;
``interrupted-rank-<r>``, a clean stop on SIGTERM (exit 75); ``resume.json``, the checkpoint the node resumes from.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .adapters import interrupt
from .core.errors import Interrupted, SpecError, UserError
from .core.spec import Job

log = logging.getLogger(__name__)

#: The pod's grace period after SIGTERM, set by the operator (``spec.resources.terminationGracePeriodSeconds``).
GRACE_ENV = "PREFOPS_TERMINATION_GRACE_SECONDS"
#: Seconds of the grace kept for the launcher: torchrun kills ranks still saving this long before the kubelet would
#: kill the pod, so the launcher still exits with its reason.
LAUNCHER_MARGIN_SECONDS = 5


@dataclass(frozen=True)
class Topology:
    nnodes: int
    node_rank: int
    nproc_per_node: int
    master_addr: str
    master_port: int

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def topology(job: Job, env: Mapping[str, str] | None = None) -> Topology:
    """The process layout from the environment, falling back to the spec. Pure given ``env``."""
    env = os.environ if env is None else env
    res = job.spec.resources
    nnodes = int(env.get("PREFOPS_NNODES", "1"))
    return Topology(
        nnodes=nnodes,
        node_rank=int(env.get("PREFOPS_NODE_RANK", "0")),
        nproc_per_node=int(env.get("PREFOPS_NPROC_PER_NODE", str(res.nproc_per_node))),
        master_addr=env.get("PREFOPS_MASTER_ADDR", "127.0.0.1"),
        master_port=int(env.get("PREFOPS_MASTER_PORT", "0")),
    )


def needs_torchrun(job: Job) -> bool:
    """Whether this process starts the ranks under torchrun (rather than training itself): not already a rank, and
    the job has several processes or uses DeepSpeed (which needs torchrun's environment, even for one process)."""
    if "LOCAL_RANK" in os.environ:
        return False
    return topology(job).world_size > 1 or job.spec.training.deepspeed is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def grace_seconds(job: Job, env: Mapping[str, str]) -> int:
    """``PREFOPS_TERMINATION_GRACE_SECONDS``, else (local mode) ``spec.resources.terminationGracePeriodSeconds``;
    :class:`SpecError` naming the variable when it is not a whole number >= 1."""
    value = env.get(GRACE_ENV, "")
    if not value:
        return job.spec.resources.termination_grace_period_seconds
    if not value.isdigit() or int(value) < 1:
        raise SpecError(f"{GRACE_ENV}: must be a whole number of seconds >= 1, got {value!r}")
    return int(value)


def shutdown_timeout(grace: int) -> int:
    """How long torchrun waits for its ranks after passing them SIGTERM: the grace less the launcher's margin."""
    return max(1, grace - LAUNCHER_MARGIN_SECONDS)


def torchrun_command(
    topo: Topology, job_path: Path, job: Job, grace: int, phase: str = "train", args: Sequence[str] = ()
) -> list[str]:
    """torchrun running ``prefops-trainer <phase> <job_path> <args>`` on every rank of this node."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={topo.nnodes}",
        f"--node-rank={topo.node_rank}",
        f"--nproc-per-node={topo.nproc_per_node}",
        f"--master-addr={topo.master_addr}",
        f"--master-port={topo.master_port or 29500}",
        f"--rdzv-conf=timeout={job.spec.startup_deadline_seconds}",
        f"--shutdown-timeout={shutdown_timeout(grace)}",
        "--module",
        "prefops_trainer",
        phase,
        str(job_path),
        *args,
    ]


def torchrun_env(cuda: bool, error_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PREFOPS_ERROR_DIR"] = error_dir
    if not cuda:
        env.setdefault("DS_ACCELERATOR", "cpu")
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def torchrun_train(job: Job, job_path: Path) -> int:
    """Run ``train`` on every local rank, passing SIGTERM on to them. A rank's user error comes back as
    :class:`UserError` (exit 2) with its message; a stop on SIGTERM (this pod's, or another node's that the ranks
    agreed on) as :class:`Interrupted` (exit 75)."""
    topo = topology(job)
    if topo.master_port == 0 and topo.nnodes == 1:
        topo = Topology(topo.nnodes, topo.node_rank, topo.nproc_per_node, topo.master_addr, _free_port())
    return _torchrun(topo, torchrun_command(topo, job_path, job, grace_seconds(job, os.environ)))


def precompute_topology(job: Job, env: Mapping[str, str] | None = None) -> Topology:
    """A precompute pod's processes: ``PREFOPS_NPROC_PER_NODE`` (locally ``spec.resources``'s processes per node) on
    this node alone. Its pods share no process group: each computes its own shard, its processes a part of it."""
    return Topology(1, 0, topology(job, env).nproc_per_node, "127.0.0.1", 0)


def needs_torchrun_precompute(job: Job, zero3: bool) -> bool:
    """Whether ``precompute`` starts its ranks under torchrun: not already a rank, and several processes, or ZeRO-3
    (DeepSpeed needs torchrun's environment, even for one process)."""
    if "LOCAL_RANK" in os.environ:
        return False
    return precompute_topology(job).nproc_per_node > 1 or zero3


def torchrun_precompute(job: Job, job_path: Path, shard: int, num_shards: int, told: Mapping[str, str]) -> int:
    """Run ``precompute --shard --num-shards`` on every process of this pod, with the environment ``told`` added
    (errors and SIGTERM as :func:`torchrun_train`)."""
    base = precompute_topology(job)
    topo = Topology(1, 0, base.nproc_per_node, base.master_addr, _free_port())
    args = ("--shard", str(shard), "--num-shards", str(num_shards))
    cmd = torchrun_command(topo, job_path, job, grace_seconds(job, os.environ), "precompute", args)
    return _torchrun(topo, cmd, told)


def _torchrun(topo: Topology, cmd: list[str], told: Mapping[str, str] | None = None) -> int:
    import torch

    log.info(
        "starting %d process%s on this node (%d nodes, node rank %d): %s",
        topo.nproc_per_node,
        "es" if topo.nproc_per_node > 1 else "",
        topo.nnodes,
        topo.node_rank,
        " ".join(cmd[2:]),
    )
    with tempfile.TemporaryDirectory(prefix="prefops-ranks-") as scratch, interrupt.forwarding() as child:
        env = {**torchrun_env(torch.cuda.is_available(), scratch), **(told or {})}
        code = child.started(subprocess.Popen(cmd, env=env)).wait()
        words = RankWords.read(Path(scratch))
    return outcome(code, words, topo.nproc_per_node, interrupt.requested())


@dataclass(frozen=True)
class RankWords:
    """What the ranks of this node left in the scratch folder: user errors and clean stops on SIGTERM, in rank order."""

    errors: tuple[str, ...]
    interrupted: tuple[str, ...]

    @classmethod
    def read(cls, folder: Path) -> RankWords:
        files = sorted(p for p in folder.iterdir() if p.is_file())
        return cls(
            tuple(p.read_text() for p in files if p.name.startswith("rank-")),
            tuple(p.read_text() for p in files if p.name.startswith("interrupted-rank-")),
        )


def outcome(code: int, words: RankWords, local_ranks: int, signalled: bool) -> int:
    """torchrun's exit code as the pod's: 0; a rank's user error raised; :class:`Interrupted` when this pod got
    SIGTERM or every local rank stopped on one (another node's, agreed at a step boundary); else ``code``. Pure."""
    if code == 0:
        return 0
    if words.errors:
        raise UserError(words.errors[0])
    if signalled or len(words.interrupted) == local_ranks:
        said = words.interrupted[0] if words.interrupted else "stopped on SIGTERM before the ranks saved anything"
        raise Interrupted(said)
    return code
