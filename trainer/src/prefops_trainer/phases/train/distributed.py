"""Which rank this process is, and the process group's start and end."""

from __future__ import annotations

import os
from typing import Any, TypeVar

from ...adapters.progress import is_tty
from ...core.spec import JobSpec
from ...core.trlconfig import Runtime

T = TypeVar("T")


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_share() -> tuple[int, int]:
    """(this process's rank on its node, processes on the node): how the node's processes split shared work."""
    return int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def _group() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _group_or_alone() -> bool:
    """Whether there is a process group to talk through; without one this must be the only process."""
    if _group():
        return True
    if world_size() > 1:
        raise RuntimeError(f"{world_size()} processes but no process group: the ranks cannot agree")
    return False


def gather(obj: T) -> list[T]:
    """``obj`` of every rank, in rank order (``[obj]`` when this is the only process)."""
    if not _group_or_alone():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def from_rank_zero(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (``obj`` itself when this is the only process)."""
    if not _group_or_alone():
        return obj
    import torch.distributed as dist

    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[no-any-return]


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

    if _group():
        dist.barrier()


def leave_process_group() -> None:
    """Every rank waits until rank 0 has written the phase's results, then leaves the process group. A gloo group
    left for the interpreter's exit to tear down can abort a rank (SIGABRT, "terminate called without an active
    exception") and so fail a job whose training had finished."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
