"""Tokenize rows exactly as TRL's trainers do, so precomputed numbers equal TRL's own.

We call the trainers' own ``_prepare_dataset`` (prompt extraction, EOS, chat template, prompt/completion split
at the common prefix, KTO's KL completions) rather than a copy of it; the TRL version is pinned and tests
compare our reference log-probs with TRL's ``precompute_ref_log_probs`` on the same model and data.
"""

from __future__ import annotations

from types import SimpleNamespace

from .errors import DataError
from .spec import DatasetSpec


def tokenize_pairs(rows, tokenizer, spec: DatasetSpec, name: str):
    """Add ``prompt_ids``/``chosen_ids``/``rejected_ids`` to paired ``rows`` (which carry an ``index`` column),
    as ``DPOTrainer`` does."""
    from trl import DPOTrainer

    shim = SimpleNamespace(_tokenizer=_with_pad(tokenizer))
    args = SimpleNamespace(dataset_num_proc=None, max_length=spec.max_length, truncation_mode=spec.truncation_mode)
    return _none_dropped(rows, DPOTrainer._prepare_dataset(shim, rows, tokenizer, args, "train"), tokenizer, spec, name)


def tokenize_unpaired(rows, tokenizer, spec: DatasetSpec, name: str, batch_size: int, calculate_kl: bool):
    """Tokenize unpaired rows as ``KTOTrainer`` does, KL completions included.

    The KL completions are the completions rotated by one within each batch of ``batch_size`` rows (the training
    batch), exactly TRL's pairing, so the precomputed KL reference log-probs match what TRL would compute. The
    result has the columns the precompute pass reads: ``chosen_ids`` (the completion) and ``rejected_ids`` (the
    KL completion; the completion again when the loss needs no KL term).
    """
    from trl import KTOTrainer

    shim = SimpleNamespace(
        _tokenizer=_with_pad(tokenizer), calculate_KL=calculate_kl, desirable_weight=1.0, undesirable_weight=1.0
    )
    args = SimpleNamespace(dataset_num_proc=None, max_length=spec.max_length, per_device_train_batch_size=batch_size)
    tokenized = _none_dropped(
        rows, KTOTrainer._prepare_dataset(shim, rows, tokenizer, args, "prefops"), tokenizer, spec, name
    )
    kl = "KL_completion_ids" if calculate_kl else "completion_ids"
    return tokenized.map(lambda r: {"chosen_ids": r["completion_ids"], "rejected_ids": r[kl]})


def _with_pad(tokenizer):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _none_dropped(rows, tokenized, tokenizer, spec: DatasetSpec, name: str):
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


def _prompt_ids(tokenizer, row) -> list[int]:
    prompt = row["prompt"]
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
    return tokenizer(text=prompt)["input_ids"]
