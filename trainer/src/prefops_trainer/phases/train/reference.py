"""The reference log-probs training reads: the complete cache of every split, checked against the model; and, for a
DPO or KTO trainer, the splits' tokens the precompute phase kept there, so a job tokenizes its data once."""

from __future__ import annotations

import logging
import random
import secrets
from typing import TYPE_CHECKING

from ...adapters import trl_bridge
from ...adapters.refcache import TOKEN_COLUMNS, RefCache, RefTable
from ...compute import gathered, logprobs
from ...core.errors import CacheError
from ...core.spec import JobSpec
from ...core.trlconfig import trl_trainer
from ...inputs import Inputs
from . import distributed

if TYPE_CHECKING:
    from datasets import Dataset
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


def reuses_tokens(spec: JobSpec) -> bool:
    """Whether training reads the cache's tokens: a job whose precompute phase ran its trainer's own tokenization
    (``DPOTrainer``'s, or ``KTOTrainer``'s with its KL completions)."""
    return spec.precompute and trl_trainer(spec).trainer in ("DPOTrainer", "KTOTrainer")


def load_tokens(inputs: Inputs) -> dict[str, Dataset]:
    """Every split's tokens that its complete cache lists (each file checked against the manifest's sha256), read
    into this process's local folder; a split whose cache lists none is left out, and TRL tokenizes it."""
    if not reuses_tokens(inputs.spec):
        return {}
    found = {}
    for split in inputs.splits:
        tokens = inputs.ref_cache(split).load_tokens(inputs.ws.local(f"tokens/{split}-rank{distributed.rank()}"))
        if tokens is not None:
            found[split] = tokens
    return found


def _unfinished(cache: RefCache, workers: int) -> str:
    """Which shards keep the cache incomplete: those missing, and those there that this job did not write."""
    missing, foreign = cache.missing_shards(workers), cache.foreign_shards(workers)
    said = [f"shards {missing} missing"] if missing else []
    return ", ".join([*said, f"shards {foreign} not written by this job"] if foreign else said)


def verify_sample(inputs: Inputs, model: PreTrainedModel, table: RefTable, tokens: Dataset | None = None) -> int:
    """Recompute a few random rows' reference log-probs with the (untrained) model, and tokenize them again when
    training reads the cache's ``tokens``; fail fast on a mismatch.

    Guards against a stale or foreign cache (a key collision, an edited model folder, a changed library, numbers
    planted in the shared cache). The rows are drawn from the operating system's randomness (the same on every rank:
    rank 0 draws), not from ``training.seed``, so whoever writes a cache cannot know which rows will be checked; the
    log names them. Returns the number of rows checked.
    """
    n = min(inputs.spec.reference.verify_samples, len(table))
    if n == 0:
        return 0
    picks = spot_rows(len(inputs.splits["train"]), n, distributed.from_rank_zero(secrets.randbits(64)))
    fresh = inputs.tokenized_rows("train", picks)  # paired data: only these rows
    if tokens is not None:
        _check_tokens(inputs, tokens, picks, fresh)
    got = _recompute(inputs, model, fresh)
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


def _check_tokens(inputs: Inputs, tokens: Dataset, picks: list[int], fresh: Dataset) -> None:
    """The cache's tokens of rows ``picks`` equal the rows tokenized now (``fresh``)."""
    cached = tokens.select(picks)
    for column in TOKEN_COLUMNS:
        for idx, theirs, ours in zip(fresh["index"], cached[column], fresh[column], strict=True):
            if list(theirs) != list(ours):
                raise CacheError(
                    f"reference cache {inputs.ref_cache('train').root}: row {idx} {column} differs from the row "
                    "tokenized now: the cache was written with another tokenizer or was altered; delete that folder "
                    "and re-run precompute"
                )


def _recompute(inputs: Inputs, model: PreTrainedModel, rows: Dataset) -> logprobs.RefLogps:
    """The reference log-probs of the tokenized training ``rows``, computed now; ``model`` is left as it was."""
    logprobs.prepare_model(model)
    try:
        with gathered.module_by_module(model):  # ZeRO-3: every rank recomputes the same rows, a module at a time
            return logprobs.compute(
                model,
                rows,
                pad_token_id=inputs.tokenizer.pad_token_id,
                max_length=inputs.spec.dataset.max_length,
                truncation_mode=inputs.spec.dataset.truncation_mode,
                batch_size=len(rows),
            )
    finally:
        trl_bridge.detach_fused_head(model)  # the trainer adds its own
        model.train()
