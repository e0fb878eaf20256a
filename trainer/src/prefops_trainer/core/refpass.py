"""How a precompute pod's processes share its shard of the reference pass. Pure.

Each pod computes one shard (``core.cachekey.shard_rows``); each of its processes a contiguous part of that shard
(:func:`rank_rows`), and the pod's first process writes the shard whole. The cache's layout is the same whatever the
number of processes: a restarted pod may run more or fewer.

The reference model is either copied to every process (``replicated``: each runs on its own device) or partitioned
over the pod's processes by DeepSpeed ZeRO-3 (``zero3``: each holds a slice of the weights, gathered a module at a
time as the forward passes reach it), for a model that does not fit one device (:func:`sharding`).
"""

from __future__ import annotations

from typing import Any, Literal

from .cachekey import shard_rows

Sharding = Literal["replicated", "zero3"]


def rank_rows(n_rows: int, shard: int, num_shards: int, rank: int, ranks: int) -> range:
    """The rows process ``rank`` of ``ranks`` computes of shard ``shard`` of ``num_shards``: a contiguous part of the
    shard's rows; the parts of all processes of all shards are every row exactly once."""
    rows = shard_rows(n_rows, shard, num_shards)
    part = shard_rows(len(rows), rank, ranks)
    return range(rows.start + part.start, rows.start + part.stop)


def sharding(choice: str, cuda: bool, planned: str | None) -> Sharding:
    """The reference pass's mode: ``spec.reference.sharding`` when it names one; for ``auto``, on GPUs, the plan's
    (``planned``: :func:`.planner.phases.reference_sharding`, ZeRO-3 when the model does not fit one device and the
    pod has several), else replicated (on CPUs, or when there is no plan: None)."""
    if choice in ("replicated", "zero3"):
        return "zero3" if choice == "zero3" else "replicated"
    return "zero3" if cuda and planned == "zero3" else "replicated"


def zero3_inference_config(dtype: str) -> dict[str, Any]:
    """DeepSpeed's configuration for a model partitioned by ZeRO-3 as it loads, for forward passes only: every
    weight partitioned (no persistence threshold), in the model's dtype."""
    return {
        "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
        "train_micro_batch_size_per_gpu": 1,
        "bf16": {"enabled": dtype == "bfloat16"},
        "fp16": {"enabled": dtype == "float16"},
    }
