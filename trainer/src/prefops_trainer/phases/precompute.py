"""The precompute phase: reference log-probs of one shard of every split, into the shared cache.

A split whose cache manifest exists is a hit and costs nothing. A shard already written (by an earlier,
interrupted run of this phase) is not recomputed. The worker that finds every shard present writes the
manifest; the train phase does the same if two workers finished at once and neither saw the other's shard.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..adapters import metrics
from ..adapters.progress import Progress
from ..adapters.refcache import RefCache
from ..compute import logprobs
from ..core.cachekey import shard_rows
from ..core.errors import SpecError
from ..core.reports import PrecomputeReport, SplitEntry
from ..inputs import Inputs
from . import reports

if TYPE_CHECKING:
    import torch
    from datasets import Dataset
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


def run(inputs: Inputs, shard: int = 0, num_shards: int | None = None) -> PrecomputeReport:
    """Compute (or find) shard ``shard`` of ``num_shards`` for every split; return the phase report."""
    metrics.enter("precompute")
    num_shards = _check(inputs, shard, num_shards)
    report: PrecomputeReport = {"shard": shard, "numShards": num_shards, "splits": {}}
    model: PreTrainedModel | None = None
    with reports.timed(report):
        for split in inputs.splits:
            entry, model = _split(inputs, split, shard, num_shards, model)
            report["splits"][split] = entry
    report["cacheHit"] = all(s["cacheHit"] for s in report["splits"].values())
    reports.write(inputs.ws, "precompute" if num_shards == 1 else f"precompute-{shard:05d}", report)
    return report


def _check(inputs: Inputs, shard: int, num_shards: int | None) -> int:
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
    inputs: Inputs, split: str, shard: int, num_shards: int, model: PreTrainedModel | None
) -> tuple[SplitEntry, PreTrainedModel | None]:
    """This shard of ``split``: a cache hit, a shard already written, or computed now (loading the model once)."""
    cache = inputs.ref_cache(split)
    entry: SplitEntry = {"key": cache.key, "cacheHit": cache.manifest() is not None}
    if entry["cacheHit"]:
        log.info("reference cache hit for %s split: %s", split, cache.root)
        return entry, model
    n_rows = len(inputs.splits[split])
    if cache.adopts_shard(shard, num_shards):
        log.info("%s shard %d/%d already in the cache; not recomputed", split, shard, num_shards)
    else:
        mine = _tokenized(inputs, cache, split, shard, num_shards)
        if model is None:
            model = inputs.load_model()
            _on_device(model)
            logprobs.prepare_model(model)
        entry["pairs"] = len(mine)
        entry["pairsPerSecond"] = _compute_shard(inputs, model, mine, cache, shard, num_shards, split)
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
    inputs: Inputs, model: PreTrainedModel, rows: Dataset, cache: RefCache, shard: int, num_shards: int, split: str
) -> float:
    tok, d, m = inputs.tokenizer, inputs.spec.dataset, metrics.current()
    if m:
        m.set("precompute_pairs_total", len(rows))
        m.set("precompute_pairs_done", 0)
    bar = Progress(
        len(rows),
        f"reference log-probs ({split}, shard {shard + 1}/{num_shards})",
        on_update=(lambda done: m.set("precompute_pairs_done", done)) if m else (lambda done: None),
    )
    speed = logprobs.Throughput()

    def step(n: int) -> None:
        speed.add(n)
        bar.update(n)

    result = logprobs.compute(
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
        "model": inputs.spec.model.source.as_written,
        "dataset": inputs.spec.dataset.source.as_written,
        "split": split,
        "maxLength": inputs.spec.dataset.max_length,
        "truncationMode": inputs.spec.dataset.truncation_mode,
        "dtype": inputs.dtype,
    }


def _on_device(model: torch.nn.Module) -> None:
    """Move ``model`` (in place) to the GPU when there is one."""
    import torch

    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
