"""The reference cache's content key and shard layout. Pure.

The key hashes everything that changes the numbers: the model folder's files (weights, config, tokenizer,
chat template), the dataset rows, ``maxLength``, ``truncationMode``, the dtype, and this format's version.
Anything else (beta, loss type, learning rate...) does not enter it, so a sweep shares one cache.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

FORMAT_VERSION = 1


def cache_key(
    model_files: dict[str, str],
    data_fingerprint: str,
    max_length: int,
    truncation: str,
    dtype: str,
    extra: dict[str, Any] | None = None,
) -> str:
    """A stable hex key (32 chars) for the inputs that determine the reference log-probs.

    ``extra`` carries what a particular algorithm adds (KTO: its KL pairing depends on the batch size).
    """
    doc = {
        **(extra or {}),
        "format": FORMAT_VERSION,
        "model": model_files,
        "data": data_fingerprint,
        "maxLength": max_length,
        "truncationMode": truncation,
        "dtype": dtype,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def shard_name(shard: int, num_shards: int) -> str:
    return f"shard-{shard:05d}-of-{num_shards:05d}.parquet"


def shard_rows(n_rows: int, shard: int, num_shards: int) -> range:
    """The contiguous row range shard ``shard`` of ``num_shards`` owns."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"--shard must be in [0, {num_shards}), got {shard}")
    return range(n_rows * shard // num_shards, n_rows * (shard + 1) // num_shards)


def manifest(key: str, n_rows: int, num_shards: int, info: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a complete cache: its key, format, row count and shard files, plus ``info``."""
    return {
        "key": key,
        "format": FORMAT_VERSION,
        "rows": n_rows,
        "shards": [shard_name(i, num_shards) for i in range(num_shards)],
        **info,
    }
