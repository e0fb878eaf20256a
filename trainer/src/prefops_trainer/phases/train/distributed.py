"""Which rank this process is, and the process group's start and end."""

from __future__ import annotations

import os

from ...adapters.progress import is_tty
from ...core.spec import JobSpec
from ...core.trlconfig import Runtime


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def runtime(dtype: str) -> Runtime:
    import torch

    return Runtime(cuda=torch.cuda.is_available(), dtype=dtype, world_size=world_size(), tty=is_tty())


def init_deepspeed(spec: JobSpec, rt: Runtime) -> None:
    """Under torchrun with DeepSpeed: start DeepSpeed's own process group before the model loads, which ZeRO-3
    needs to partition the weights while they load (``zero.Init``)."""
    if spec.training.deepspeed is not None and rt.world_size > 1:
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if rt.cuda else "gloo")


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def leave_process_group() -> None:
    """Every rank waits until rank 0 has written the phase's results, then leaves the process group. A gloo group
    left for the interpreter's exit to tear down can abort a rank (SIGABRT, "terminate called without an active
    exception") and so fail a job whose training had finished."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
