"""The precompute phase: reference log-probs of one shard of every split, into the shared cache.

A split whose cache manifest exists is a hit and costs nothing. A shard already written (by an earlier,
interrupted run of this phase) is not recomputed. The worker that finds every shard present writes the
manifest; the train phase does the same if two workers finished at once and neither saw the other's shard.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import metrics as m
from .. import precompute
from ..errors import SpecError
from ..inputs import Inputs
from ..progress import Progress
from ..refcache import shard_rows
from ..workspace import timed

log = logging.getLogger(__name__)


def run(inputs: Inputs, shard: int = 0, num_shards: int | None = None) -> dict[str, Any]:
    """Compute (or find) shard ``shard`` of ``num_shards`` for every split; return the phase report."""
    if not inputs.spec.precompute:
        raise SpecError(
            f"spec.reference.precompute: algorithm {inputs.spec.algorithm.name!r} has nothing to precompute "
            "(reference-free, or reference.precompute is false)"
        )
    num_shards = num_shards or inputs.spec.reference.workers
    if not 0 <= shard < num_shards:
        raise SpecError(f"--shard: must be in [0, {num_shards}), got {shard}")
    metrics = m.current()
    report: dict[str, Any] = {"shard": shard, "numShards": num_shards, "splits": {}}
    model = None
    with timed(report):
        for split in inputs.splits:
            cache = inputs.ref_cache(split)
            entry: dict[str, Any] = {"key": cache.key, "cacheHit": cache.manifest() is not None}
            report["splits"][split] = entry
            if entry["cacheHit"]:
                log.info("reference cache hit for %s split: %s", split, cache.root)
                continue
            n_rows = len(inputs.splits[split])
            if cache.has_shard(shard, num_shards):
                log.info("%s shard %d/%d already in the cache; not recomputed", split, shard, num_shards)
            else:
                mine = inputs.tokenized_rows(split, shard_rows(n_rows, shard, num_shards))
                if model is None:
                    model = inputs.load_model().to(_device())
                    precompute.prepare_model(model)
                entry["pairs"] = len(mine)
                entry["pairsPerSecond"] = _compute_shard(inputs, model, mine, cache, shard, num_shards, split, metrics)
            cache.finalize(num_shards, n_rows, _cache_info(inputs, split))
    report["cacheHit"] = all(s["cacheHit"] for s in report["splits"].values())
    name = "precompute" if num_shards == 1 else f"precompute-{shard:05d}"
    inputs.ws.write_report(name, report)
    return report


def _compute_shard(inputs, model, rows, cache, shard, num_shards, split, metrics) -> float:
    tok = inputs.tokenizer
    d = inputs.spec.dataset
    if metrics:
        metrics.set("precompute_pairs_total", len(rows))
        metrics.set("precompute_pairs_done", 0)
    bar = Progress(
        len(rows),
        f"reference log-probs ({split}, shard {shard + 1}/{num_shards})",
        on_update=(lambda done: metrics.set("precompute_pairs_done", done)) if metrics else (lambda d: None),
    )
    speed = precompute.Throughput()

    def step(n: int) -> None:
        speed.add(n)
        bar.update(n)

    result = precompute.compute(
        model,
        rows,
        pad_token_id=tok.pad_token_id,
        max_length=d.max_length,
        truncation_mode=d.truncation_mode,
        batch_size=inputs.spec.reference.batch_size,
        tokens_per_batch=inputs.spec.reference.tokens_per_batch,
        on_progress=step,
    )
    bar.close()
    cache.write_shard(shard, num_shards, result.index, result.chosen, result.rejected)
    log.info("%s shard %d/%d: %d pairs at %.1f pairs/s", split, shard, num_shards, len(rows), speed.rate)
    return round(speed.rate, 3)


def _cache_info(inputs: Inputs, split: str) -> dict[str, Any]:
    return {
        "model": inputs.spec.model.source,
        "dataset": inputs.spec.dataset.source,
        "split": split,
        "maxLength": inputs.spec.dataset.max_length,
        "truncationMode": inputs.spec.dataset.truncation_mode,
        "dtype": inputs.dtype,
    }


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
