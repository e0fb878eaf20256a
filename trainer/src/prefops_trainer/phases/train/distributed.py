"""Which rank this process is, the process group's start and end, and how the ranks agree.

The group is started here, with ``spec.training.collectiveTimeoutSeconds`` as the timeout of every collective, before
TRL's arguments or DeepSpeed would start one with their defaults. Work that waits on storage (fetching the checkpoint a
restart resumes from) runs before it exists: one process per node does it, the node's others wait on its word in a
file (:func:`node_leader`), not in a collective.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from ...adapters.progress import is_tty
from ...core.spec import JobSpec
from ...core.trlconfig import Runtime

log = logging.getLogger(__name__)

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


def init_group(spec: JobSpec, rt: Runtime) -> None:
    """Under torchrun: start the process group, with ``spec.training.collectiveTimeoutSeconds`` as its timeout;
    DeepSpeed's own when the job uses it, a group of one included (ZeRO-3 needs it before the model loads, to
    partition the weights as they load). TRL's arguments and accelerate then use this group as it is."""
    if rt.world_size < 2 and spec.training.deepspeed is None:
        return
    backend, timeout = "nccl" if rt.cuda else "gloo", timedelta(seconds=spec.training.collective_timeout_seconds)
    if spec.training.deepspeed is not None:
        import deepspeed

        deepspeed.init_distributed(dist_backend=backend, timeout=timeout)
        return
    import torch
    import torch.distributed as dist

    if rt.cuda:
        torch.cuda.set_device(local_share()[0])
    dist.init_process_group(backend=backend, timeout=timeout)


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (a collective: every rank calls it at the same point)."""
    if not _group_or_alone():
        return flag
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    box = torch.tensor([int(flag)], device=device)
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return bool(box.item())


def agree(value: T, what: str) -> T:
    """``value``, once every rank holds the same; RuntimeError naming ``what`` and each rank's value when not."""
    values = gather(value)
    if any(v != values[0] for v in values):
        raise RuntimeError(f"the ranks disagree on {what}: {values} (in rank order)")
    return value


def node_leader(what: str, compute: Callable[[], T]) -> T:
    """``compute()`` run by the first process of this node; the node's other processes wait for its result (JSON) in
    a file of the launcher's scratch folder, with no process group involved. An error in the leader is raised in
    every process of the node."""
    here, count = local_share()
    if count == 1:
        return compute()
    word = _scratch() / f"{what}.json"
    if here == 0:
        try:
            result = compute()
        except Exception as e:
            _write_word(word, {"error": f"{type(e).__name__}: {e}"})
            raise
        _write_word(word, {"result": result})
        return result
    return _wait_for_word(word, what)  # type: ignore[no-any-return]


def _scratch() -> Path:
    folder = os.environ.get("PREFOPS_ERROR_DIR")
    if not folder:
        raise RuntimeError("several processes on this node but no PREFOPS_ERROR_DIR: start them with prefops-trainer")
    return Path(folder)


def _write_word(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


def _wait_for_word(path: Path, what: str) -> Any:
    """The leader's result; it is there when its file is (torchrun ends this process if the leader dies first)."""
    start = last_said = time.monotonic()
    while not path.exists():
        time.sleep(0.2)
        if time.monotonic() - last_said > 60:
            last_said = time.monotonic()
            log.info("waiting for this node's first process (%s): %.0f s", what, last_said - start)
    doc = json.loads(path.read_text())
    if "error" in doc:
        raise RuntimeError(f"this node's first process failed ({what}): {doc['error']}")
    return doc["result"]


def barrier() -> None:
    import torch.distributed as dist

    if _group():
        dist.barrier()


def leave_process_group() -> None:
    """Every rank waits for the others, then leaves the process group; what a rank does after (rank 0 uploads the
    trained weights) waits in no collective. A gloo group left for the interpreter's exit to tear down can abort a
    rank (SIGABRT, "terminate called without an active exception") and so fail a job whose training had finished."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
