"""The precompute phase: reference log-probs of one shard of every split, into the shared cache.

A split whose cache manifest exists is a hit and costs nothing. A shard already written (by an earlier,
interrupted run of this phase) is not recomputed. The worker that finds every shard present writes the
manifest; the train phase does the same if two workers finished at once and neither saw the other's shard.

A worker (a pod) runs one process per device under torchrun: each computes a part of the shard, and the first writes
the shard whole (:mod:`.pod_ranks`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ..adapters import metrics
from ..adapters.progress import Progress
from ..adapters.refcache import RefCache
from ..compute import logprobs
from ..core.cachekey import shard_rows
from ..core.errors import SpecError
from ..core.reports import PrecomputeReport, SplitEntry
from ..inputs import Inputs
from . import pod_ranks, reports
from .pod_ranks import PodRanks

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


def run(inputs: Inputs, shard: int = 0, num_shards: int | None = None) -> PrecomputeReport:
    """Compute (or find) shard ``shard`` of ``num_shards`` for every split; return the phase report."""
    metrics.enter("precompute")
    num_shards = check(inputs, shard, num_shards)
    ranks = pod_ranks.start(inputs)
    report: PrecomputeReport = {"shard": shard, "numShards": num_shards, "splits": {}}
    report.update({"processes": ranks.count, "sharding": ranks.mode})
    model: PreTrainedModel | None = None
    with reports.timed(report):
        for split in inputs.splits:
            entry, model = _split(inputs, split, (shard, num_shards), model, ranks)
            report["splits"][split] = entry
    report["cacheHit"] = all(s["cacheHit"] for s in report["splits"].values())
    ranks.stop()
    if ranks.leader:
        reports.write(inputs.ws, reports.precompute_name(shard, num_shards), report)
    return report


def check(inputs: Inputs, shard: int, num_shards: int | None) -> int:
    """The number of shards; refuse a job with nothing to precompute, or a shard out of range."""
    if not inputs.spec.precompute:
        raise SpecError(
            f"spec.reference.precompute: algorithm {inputs.spec.algorithm.name!r} has nothing to precompute "
            "(reference-free, or reference.precompute is false)"
        )
    num_shards = num_shards or inputs.spec.reference.workers
    if not 0 <= shard < num_shards:
        raise SpecError(f"--shard: must be in [0, {num_shards}), got {shard}")
    return num_shards


def _split(
    inputs: Inputs, split: str, where: tuple[int, int], model: PreTrainedModel | None, ranks: PodRanks
) -> tuple[SplitEntry, PreTrainedModel | None]:
    """This shard of ``split``: a cache hit, a shard already written, or computed now (loading the model once); what
    the pod's first process found decides for all of its processes."""
    shard, num_shards = where
    cache = inputs.ref_cache(split)
    entry: SplitEntry = {"key": cache.key, "cacheHit": ranks.word(cache.manifest() is not None)}
    if entry["cacheHit"]:
        log.info("reference cache hit for %s split: %s", split, cache.root)
        return entry, model
    n_rows = len(inputs.splits[split])
    if ranks.word(ranks.leader and cache.adopts_shard(shard, num_shards)):  # the first process looks, once
        log.info("%s shard %d/%d already in the cache; not recomputed", split, shard, num_shards)
    else:
        mine = ranks.leader_first(lambda: _tokenized(inputs, cache, split, shard, num_shards))
        if model is None:
            model = ranks.load_model(inputs)
        entry["pairs"] = len(mine)
        part = ranks.part(mine, n_rows, shard, num_shards)
        entry["pairsPerSecond"] = _compute_shard(inputs, model, part, cache, where, split, ranks)
    if ranks.leader:
        cache.finalize(num_shards, n_rows, _cache_info(inputs, split))
    return entry, model


def _tokenized(inputs: Inputs, cache: RefCache, split: str, shard: int, num_shards: int) -> Dataset:
    """This shard's rows tokenized: by an earlier run of this shard (kept in the cache), or now (and kept)."""
    rows = shard_rows(len(inputs.splits[split]), shard, num_shards)
    found = cache.tokens(shard, num_shards, rows)
    if found is not None:
        return found
    mine = inputs.tokenized_rows(split, rows)
    cache.write_tokens(shard, num_shards, mine)
    return mine


def _compute_shard(
    inputs: Inputs,
    model: PreTrainedModel,
    rows: Dataset,
    cache: RefCache,
    where: tuple[int, int],
    split: str,
    ranks: PodRanks,
) -> float:
    """This process's ``rows`` of the shard computed, and (the first process) the shard written; the pod's pairs per
    second."""
    shard, num_shards = where
    tok, d, m = inputs.tokenizer, inputs.spec.dataset, metrics.current()
    if m:
        m.set("precompute_pairs_total", len(rows))
        m.set("precompute_pairs_done", 0)
    bar = Progress(
        len(rows),
        f"reference log-probs ({split}, shard {shard + 1}/{num_shards}{ranks.label})",
        on_update=(lambda done: m.set("precompute_pairs_done", done)) if m else (lambda done: None),
    )
    speed = logprobs.Throughput()

    def step(n: int) -> None:
        speed.add(n)
        bar.update(n)

    with ranks.forwards(model) as lockstep:
        result = logprobs.compute(
            model,
            rows,
            pad_token_id=tok.pad_token_id,
            max_length=d.max_length,
            truncation_mode=d.truncation_mode,
            batch_size=inputs.spec.reference.batch_size,
            tokens_per_batch=inputs.spec.reference.tokens_per_batch,
            on_progress=step,
            lockstep=lockstep,
        )
    bar.close()
    log.info("%s shard %d/%d%s: %d pairs at %.1f pairs/s", split, shard, num_shards, ranks.label, len(rows), speed.rate)
    whole = ranks.merged(result)
    if whole is None:
        return round(speed.rate, 3)
    cache.write_shard(shard, num_shards, whole.index, whole.chosen, whole.rejected)
    rate = len(whole.index) / max(time.perf_counter() - speed.start, 1e-9)
    return round(rate, 3)


def _cache_info(inputs: Inputs, split: str) -> dict[str, Any]:
    return {
        "model": inputs.spec.model.source.as_written,
        "dataset": inputs.spec.dataset.source.as_written,
        "split": split,
        "maxLength": inputs.spec.dataset.max_length,
        "truncationMode": inputs.spec.dataset.truncation_mode,
        "dtype": inputs.dtype,
    }
