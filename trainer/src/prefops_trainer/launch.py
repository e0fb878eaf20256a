"""Start the train phase under torchrun when the job has more than one process.

The rendezvous comes from the environment the operator sets (docs/contract.md): ``PREFOPS_NNODES``,
``PREFOPS_NODE_RANK``, ``PREFOPS_NPROC_PER_NODE``, ``PREFOPS_MASTER_ADDR``, ``PREFOPS_MASTER_PORT``. Locally
they default to one node with ``spec.resources`` processes and a free port. Without CUDA the ranks use gloo
and DeepSpeed's CPU accelerator (``DS_ACCELERATOR=cpu``); with CUDA, NCCL.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .core.errors import UserError
from .core.spec import Job

log = logging.getLogger(__name__)


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
    return "LOCAL_RANK" not in os.environ and topology(job).world_size > 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun_command(topo: Topology, job_path: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={topo.nnodes}",
        f"--node-rank={topo.node_rank}",
        f"--nproc-per-node={topo.nproc_per_node}",
        f"--master-addr={topo.master_addr}",
        f"--master-port={topo.master_port or 29500}",
        "--module",
        "prefops_trainer",
        "train",
        str(job_path),
    ]


def torchrun_env(cuda: bool, error_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PREFOPS_ERROR_DIR"] = error_dir
    if not cuda:
        env.setdefault("DS_ACCELERATOR", "cpu")
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def torchrun_train(job: Job, job_path: Path) -> int:
    """Run ``train`` on every local rank; a rank's user error comes back as exit code 2 with its message."""
    import torch

    topo = topology(job)
    if topo.master_port == 0 and topo.nnodes == 1:
        topo = Topology(topo.nnodes, topo.node_rank, topo.nproc_per_node, topo.master_addr, _free_port())
    cmd = torchrun_command(topo, job_path)
    log.info(
        "starting %d processes on this node (%d nodes, node rank %d): %s",
        topo.nproc_per_node,
        topo.nnodes,
        topo.node_rank,
        " ".join(cmd[2:]),
    )
    with tempfile.TemporaryDirectory(prefix="prefops-ranks-") as errors:
        code = subprocess.call(cmd, env=torchrun_env(torch.cuda.is_available(), errors))
        messages = [p.read_text() for p in sorted(Path(errors).iterdir())]
    if code and messages:
        raise UserError(messages[0])
    return code
