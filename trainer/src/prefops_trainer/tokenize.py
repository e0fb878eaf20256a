"""Tokenize preference pairs exactly as TRL's ``DPOTrainer`` does, so precomputed numbers equal TRL's own.

We call ``DPOTrainer._prepare_dataset`` itself (prompt extraction, EOS, chat template, prompt/completion
split at the common prefix) rather than a copy of it; the TRL version is pinned and a test compares our
reference log-probs with TRL's ``precompute_ref_log_probs`` on the same model and data.
"""

from __future__ import annotations

from types import SimpleNamespace

from .errors import DataError
from .spec import DatasetSpec


def tokenize_pairs(rows, tokenizer, spec: DatasetSpec, name: str):
    """Add ``prompt_ids``/``chosen_ids``/``rejected_ids`` to ``rows`` (which carry an ``index`` column).

    Raises :class:`DataError` naming the first row whose prompt alone fills ``maxLength`` (TRL would drop
    it silently, and its completion would never be trained on).
    """
    from trl import DPOTrainer

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    shim = SimpleNamespace(_tokenizer=tokenizer)
    args = SimpleNamespace(dataset_num_proc=None, max_length=spec.max_length, truncation_mode=spec.truncation_mode)
    tokenized = DPOTrainer._prepare_dataset(shim, rows, tokenizer, args, "train")
    if len(tokenized) != len(rows):
        kept = set(tokenized["index"])
        first = next(i for i in rows["index"] if i not in kept)
        n_prompt = len(_prompt_ids(tokenizer, rows[first]))
        raise DataError(
            f"{name}: row {first}: the prompt alone is {n_prompt} tokens, which fills spec.dataset.maxLength "
            f"({spec.max_length}) and leaves no room for the answer; shorten the prompt or raise maxLength "
            f"({len(rows) - len(tokenized)} rows are affected)"
        )
    return tokenized


def _prompt_ids(tokenizer, row) -> list[int]:
    prompt = row["prompt"]
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
    return tokenizer(text=prompt)["input_ids"]
