"""Tokenize rows exactly as TRL's trainers do, so precomputed numbers equal TRL's own.

The trainers' own dataset preparation (prompt extraction, EOS, chat template, prompt/completion split at the common
prefix, KTO's KL completions) runs through the TRL bridge rather than a copy of it; tests compare our reference
log-probs with TRL's ``precompute_ref_log_probs`` on the same model and data. What we add: a row TRL would drop
silently is refused, naming it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..adapters import trl_bridge
from ..core.errors import DataError
from ..core.spec import DatasetSpec

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase


def tokenize_pairs(rows: Dataset, tokenizer: PreTrainedTokenizerBase, spec: DatasetSpec, name: str) -> Dataset:
    """Add ``prompt_ids``/``chosen_ids``/``rejected_ids`` to paired ``rows`` (which carry an ``index`` column),
    as ``DPOTrainer`` does."""
    tokenized = trl_bridge.prepare_pairs(rows, _with_pad(tokenizer), spec.max_length, spec.truncation_mode)
    return _none_dropped(rows, tokenized, tokenizer, spec, name)


def tokenize_unpaired(
    rows: Dataset, tokenizer: PreTrainedTokenizerBase, spec: DatasetSpec, name: str, batch_size: int, kl_term: bool
) -> Dataset:
    """Tokenize unpaired rows as ``KTOTrainer`` does, KL completions included.

    The KL completions are the completions rotated by one within each batch of ``batch_size`` rows (the training
    batch), exactly TRL's pairing, so the precomputed KL reference log-probs match what TRL would compute. The
    result has the columns the precompute pass reads: ``chosen_ids`` (the completion) and ``rejected_ids`` (the
    KL completion; the completion again when the loss needs no KL term).
    """
    prepared = trl_bridge.prepare_unpaired(rows, _with_pad(tokenizer), spec.max_length, batch_size, kl_term)
    tokenized = _none_dropped(rows, prepared, tokenizer, spec, name)
    kl = "KL_completion_ids" if kl_term else "completion_ids"
    return tokenized.map(lambda r: {"chosen_ids": r["completion_ids"], "rejected_ids": r[kl]})


def _with_pad(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _none_dropped(
    rows: Dataset, tokenized: Dataset, tokenizer: PreTrainedTokenizerBase, spec: DatasetSpec, name: str
) -> Dataset:
    """TRL silently drops rows whose prompt alone fills ``max_length`` (their completion would never be trained
    on); we refuse instead, naming the first such row."""
    if len(tokenized) == len(rows):
        return tokenized
    kept = set(tokenized["index"])
    pos, first = next((p, i) for p, i in enumerate(rows["index"]) if i not in kept)  # rows may be a shard of them
    raise DataError(
        f"{name}: row {first}: the prompt alone is {len(_prompt_ids(tokenizer, rows[pos]))} tokens, which fills "
        f"spec.dataset.maxLength ({spec.max_length}) and leaves no room for the answer; shorten the prompt or raise "
        f"maxLength ({len(rows) - len(tokenized)} rows are affected)"
    )


def _prompt_ids(tokenizer: PreTrainedTokenizerBase, row: dict[str, Any]) -> list[int]:
    prompt = row["prompt"]
    if isinstance(prompt, list):
        ids: Any = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)
        return list(ids["input_ids"])
    return list(tokenizer(text=prompt)["input_ids"])
