"""The reference log-probs training reads: the complete cache of every split, checked against the model."""

from __future__ import annotations

import logging
import random
import secrets
from typing import TYPE_CHECKING

from ...adapters import trl_bridge
from ...adapters.refcache import RefCache, RefTable
from ...compute import gathered, logprobs
from ...core.errors import CacheError
from ...inputs import Inputs
from . import distributed

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


def load_reference(inputs: Inputs) -> dict[str, RefTable]:
    """index → (ref chosen, ref rejected) for every split, from a complete cache (finalizing it if needed)."""
    return {split: _load_split(inputs, split) for split in inputs.splits}


def _load_split(inputs: Inputs, split: str) -> RefTable:
    cache, workers = inputs.ref_cache(split), inputs.spec.reference.workers
    n_rows = len(inputs.splits[split])
    if cache.finalize(workers, n_rows, {"split": split}) is None:
        raise RuntimeError(
            f"reference cache {cache.root} for the {split} split is incomplete ({_unfinished(cache, workers)}): run "
            "the precompute phase first"
        )
    table = cache.load()
    if len(table) != n_rows:
        raise CacheError(f"reference cache {cache.root} holds {len(table)} rows, the {split} split {n_rows}")
    return table


def _unfinished(cache: RefCache, workers: int) -> str:
    """Which shards keep the cache incomplete: those missing, and those there that this job did not write."""
    missing, foreign = cache.missing_shards(workers), cache.foreign_shards(workers)
    said = [f"shards {missing} missing"] if missing else []
    return ", ".join([*said, f"shards {foreign} not written by this job"] if foreign else said)


def verify_sample(inputs: Inputs, model: PreTrainedModel, table: RefTable) -> int:
    """Recompute a few random rows' reference log-probs with the (untrained) model; fail fast on a mismatch.

    Guards against a stale or foreign cache (a key collision, an edited model folder, a changed library, numbers
    planted in the shared cache). The rows are drawn from the operating system's randomness (the same on every rank:
    rank 0 draws), not from ``training.seed``, so whoever writes a cache cannot know which rows will be checked; the
    log names them. Returns the number of rows checked.
    """
    n = min(inputs.spec.reference.verify_samples, len(table))
    if n == 0:
        return 0
    picks = spot_rows(len(inputs.splits["train"]), n, distributed.from_rank_zero(secrets.randbits(64)))
    got = _recompute(inputs, model, picks)
    exact = inputs.dtype == "float32"
    for idx, c, r in zip(got.index, got.chosen, got.rejected, strict=True):
        for label, ours, cached in (("chosen", c, table[idx][0]), ("rejected", r, table[idx][1])):
            tol = (1e-3 + 1e-4 * abs(cached)) if exact else (0.5 + 0.02 * abs(cached))
            if abs(ours - cached) > tol:
                raise CacheError(
                    f"reference cache {inputs.ref_cache('train').root} does not match the model: row {idx} "
                    f"{label} log-prob is {ours:.4f} now, {cached:.4f} in the cache (tolerance {tol:.4f}). "
                    "The cache is stale or was written by another model; delete that folder and re-run precompute"
                )
    log.info("reference cache verified on %d random rows: %s", n, ", ".join(map(str, got.index)))
    return n


def spot_rows(n_rows: int, n: int, draw: int) -> list[int]:
    """``n`` of ``n_rows`` positions, sorted, chosen by the random number ``draw``."""
    return sorted(random.Random(draw).sample(range(n_rows), n))


def _recompute(inputs: Inputs, model: PreTrainedModel, picks: list[int]) -> logprobs.RefLogps:
    """The reference log-probs of training rows ``picks``, computed now; ``model`` is left as it was."""
    rows = inputs.tokenized_rows("train", picks)  # paired data: only these rows (TRL's trainer tokenizes the split)
    logprobs.prepare_model(model)
    try:
        with gathered.module_by_module(model):  # ZeRO-3: every rank recomputes the same rows, a module at a time
            return logprobs.compute(
                model,
                rows,
                pad_token_id=inputs.tokenizer.pad_token_id,
                max_length=inputs.spec.dataset.max_length,
                truncation_mode=inputs.spec.dataset.truncation_mode,
                batch_size=len(picks),
            )
    finally:
        trl_bridge.detach_fused_head(model)  # the trainer adds its own
        model.train()
