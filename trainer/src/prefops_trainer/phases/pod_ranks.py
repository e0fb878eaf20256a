"""The processes of one precompute pod: which part of the pod's shard each computes, how the model is held, and how
their parts become the shard (:mod:`..core.refpass`).

Without torchrun (one process, replicated) nothing here starts a process group. Otherwise the pod's processes form
one (gloo on CPUs, NCCL on GPUs, each process on GPU ``LOCAL_RANK``); the first decides what the others do (a cache
hit, a shard already written), tokenizes the shard before them, gathers their numbers and writes the shard.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..compute import gathered, logprobs
from ..core import planner, refpass
from ..inputs import Inputs
from .train import distributed

if TYPE_CHECKING:
    import torch
    from datasets import Dataset
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class PodRanks:
    """This process (``rank`` of the pod's ``count``) and the pod's way of holding the model (``mode``)."""

    rank: int
    count: int
    mode: refpass.Sharding
    keep: list[Any] = field(default_factory=list)  # ZeRO-3: transformers' configuration, alive while the model is

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @property
    def label(self) -> str:
        """How logs name this process's part: empty for a pod of one process."""
        return f", part {self.rank + 1}/{self.count}" if self.count > 1 else ""

    def word(self, value: T) -> T:
        """The first process's ``value``, on every process (what the pod does must not depend on who looked when)."""
        return distributed.from_rank_zero(value) if self.count > 1 else value

    def leader_first(self, do: Callable[[], T]) -> T:
        """``do()`` run by the first process, then by the others (which find what it left in storage)."""
        if self.leader:
            done = do()
        distributed.barrier()
        return done if self.leader else do()

    def part(self, rows: Dataset, n_rows: int, shard: int, num_shards: int) -> Dataset:
        """This process's rows of ``rows``, the shard's tokenized rows (:func:`..core.refpass.rank_rows`)."""
        start = refpass.rank_rows(n_rows, shard, num_shards, 0, 1).start
        mine = refpass.rank_rows(n_rows, shard, num_shards, self.rank, self.count)
        return rows.select(range(mine.start - start, mine.stop - start))

    def load_model(self, inputs: Inputs) -> PreTrainedModel:
        """The reference model, on this process's device or (ZeRO-3) partitioned over the pod's processes."""
        if self.mode == "zero3":
            self.keep.append(gathered.partition_on_load(refpass.zero3_inference_config(inputs.dtype)))
        model = inputs.load_model()
        if self.mode == "zero3":
            held, total = gathered.held_parameters(model)
            log.info("ZeRO-3: this process holds %d of the reference model's %d parameters (%.1f%%)", held, total,
                     100 * held / max(total, 1))  # fmt: skip
        else:
            _on_device(model)
        logprobs.prepare_model(model)
        return model

    @contextmanager
    def forwards(self, model: PreTrainedModel) -> Iterator[Callable[[int], int] | None]:
        """Around the pass: under ZeRO-3 each module's weights are gathered as it runs, and the pass must run in
        lockstep (the ``lockstep`` it yields, for :func:`..compute.logprobs.compute`); else nothing to do."""
        if self.mode != "zero3":
            yield None
            return
        with gathered.module_by_module(model):
            yield _lockstep

    def merged(self, result: logprobs.RefLogps) -> logprobs.RefLogps | None:
        """Every process's numbers, on the first (ordered by row index); None on the others."""
        if self.count == 1:
            return result
        parts = distributed.gather((result.index, result.chosen, result.rejected))
        if not self.leader:
            return None
        index, chosen, rejected = (np.concatenate([p[i] for p in parts]) for i in range(3))
        order = np.argsort(index, kind="stable")
        return logprobs.RefLogps(index[order], chosen[order], rejected[order])

    def stop(self) -> None:
        """Every process waits for the others, then the group ends (a no-op without one)."""
        distributed.leave_process_group()


#: The launcher's word to the pod's processes: how they hold the reference model (decided once, for all of them).
SHARDING_ENV = "PREFOPS_REFERENCE_SHARDING"


def sharding(inputs: Inputs) -> refpass.Sharding:
    """How this pod's processes hold the reference model (:func:`..core.refpass.sharding`): as the launcher said,
    else ``spec.reference.sharding``, ``auto`` asking the plan whether the model fits this GPU's memory."""
    told = os.environ.get(SHARDING_ENV)
    if told in ("replicated", "zero3"):
        return "zero3" if told == "zero3" else "replicated"
    import torch

    cuda, choice = torch.cuda.is_available(), inputs.spec.reference.sharding
    return refpass.sharding(choice, cuda, _planned(inputs) if cuda and choice == "auto" else None)


def _planned(inputs: Inputs) -> str | None:
    """How the plan of the job (the model's ``config.json``; ``spec.resources.gpuMemory``, as the operator judged it,
    else this GPU's memory) holds the reference model; None when it cannot be planned (the model is then copied to
    every device). Asked by the launcher, before its processes start: none of them has a GPU of its own yet."""
    import torch

    memory = None if inputs.spec.resources.gpu_memory else torch.cuda.get_device_properties(0).total_memory
    try:
        config = json.loads((inputs.model_path / "config.json").read_text())
        plan = planner.plan(inputs.spec.model_dump(mode="json", by_alias=True), config, gpu_memory=memory)
    except (OSError, ValueError, planner.PlanInputError, planner.ModelConfigError) as e:
        log.warning("reference.sharding auto: no plan of the reference pass (%s); replicated", e)
        return None
    return plan.reference_sharding


def start(inputs: Inputs) -> PodRanks:
    """This process of the pod, the pod's group started when it has one."""
    import torch

    cuda, mode = torch.cuda.is_available(), sharding(inputs)
    ranks = PodRanks(distributed.rank(), distributed.world_size(), mode)
    if ranks.count > 1 or mode == "zero3":
        _init_group(inputs, cuda, mode)
        log.info("reference pass on %d process%s, model %s", ranks.count, "es" if ranks.count > 1 else "", mode)
    return ranks


def _init_group(inputs: Inputs, cuda: bool, mode: refpass.Sharding) -> None:
    import torch

    backend = "nccl" if cuda else "gloo"
    timeout = timedelta(seconds=inputs.spec.training.collective_timeout_seconds)
    if cuda:
        torch.cuda.set_device(distributed.local_share()[0])
    if mode == "zero3":
        import deepspeed

        deepspeed.init_distributed(dist_backend=backend, timeout=timeout)
        return
    import torch.distributed as dist

    dist.init_process_group(backend=backend, timeout=timeout)


def _on_device(model: torch.nn.Module) -> None:
    """Move ``model`` (in place) to this process's GPU when there is one."""
    import torch

    model.to(torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu")


def _lockstep(mine: int) -> int:
    """The most batches any process of the pod has (a collective), ``mine`` being this one's."""
    most = max(distributed.gather(mine))
    if most > mine:
        log.info("ZeRO-3: %d of %d forwards on a dummy pair, in step with the pod's other processes", most - mine, most)
    return most
