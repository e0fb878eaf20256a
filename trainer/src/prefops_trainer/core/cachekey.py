"""The reference cache's content key, shard layout and manifest. Pure.

The key hashes everything that changes the numbers: the model folder's files (weights, config, tokenizer,
chat template), the dataset rows, ``maxLength``, ``truncationMode``, the dtype, and this format's version.
Anything else (beta, loss type, learning rate...) does not enter it, so a sweep shares one cache.

The manifest, written last, lists every shard with its row count and sha256 (format 2; a format-1 cache recorded
no checksums and, its key being different, is never read). The cache is shared by every job on the storage, so
what the manifest says is checked before it is used: shard names that are plain file names in the cache folder,
well-formed checksums, row counts that add up.

Before the manifest exists, the folder's files are adopted (a shard not computed again and counted into the manifest,
a tokens file not tokenized again) only when the file records, in its own Parquet metadata, that this job wrote it
for this key (:func:`origin`, :func:`not_ours`). The job is its run (``Workspace.run``): the resource's uid on a
cluster, which every attempt of the job shares and no file written before the job existed can carry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import IntegrityError
from .integrity import check_file_name, is_sha256

FORMAT_VERSION = 2


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


def tokens_name(shard: int, num_shards: int) -> str:
    """The file of shard ``shard``'s rows tokenized (kept for a restart, and listed in the manifest for training)."""
    return f"tokens-{shard:05d}-of-{num_shards:05d}.parquet"


def shard_rows(n_rows: int, shard: int, num_shards: int) -> range:
    """The contiguous row range shard ``shard`` of ``num_shards`` owns."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"--shard must be in [0, {num_shards}), got {shard}")
    return range(n_rows * shard // num_shards, n_rows * (shard + 1) // num_shards)


def origin(key: str, run: str) -> dict[str, str]:
    """What a file of the cache records of its writer: the cache key it was computed for and the job's run."""
    return {"key": key, "run": run}


def not_ours(recorded: Any, expected: Mapping[str, str]) -> str | None:
    """Why a file that records ``recorded`` as its origin is not this job's (``expected``, :func:`origin`); None when
    it is."""
    if not isinstance(recorded, Mapping):
        return "it records no writer (written before this job ran, or by an older prefops)"
    differ = [k for k in expected if recorded.get(k) != expected[k]]
    if not differ:
        return None
    theirs = ", ".join(f"{k} {str(recorded[k])[:64]!r}" if k in recorded else f"no {k}" for k in differ)
    return f"it records {theirs}, where this job has {', '.join(f'{k} {expected[k]!r}' for k in differ)}"


@dataclass(frozen=True)
class Shard:
    name: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """A complete cache's manifest, checked (:func:`parse_manifest`)."""

    key: str
    rows: int
    shards: tuple[Shard, ...]
    tokens: tuple[Shard, ...] = ()  # the tokens files, when the job that wrote the cache wrote one for every shard


def manifest(
    key: str, n_rows: int, shards: list[Shard], info: dict[str, Any], tokens: list[Shard] | None = None
) -> dict[str, Any]:
    """The manifest of a complete cache: its key, format, row count and shards (name, rows, sha256), the tokens files
    (the same entries) when every shard has one, plus ``info``."""
    doc = {**info, "key": key, "format": FORMAT_VERSION, "rows": n_rows, "shards": [_entry(s) for s in shards]}
    if tokens:
        doc["tokens"] = [_entry(s) for s in tokens]
    return doc


def _entry(s: Shard) -> dict[str, Any]:
    return {"name": s.name, "rows": s.rows, "sha256": s.sha256}


def parse_manifest(doc: Any, key: str, where: str) -> Manifest:
    """The manifest at ``where`` checked against the cache ``key`` it sits under; :class:`IntegrityError` naming what
    is wrong (nothing of the cache is read then)."""
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT_VERSION or doc.get("key") != key:
        raise IntegrityError(f"{where}: not a format-{FORMAT_VERSION} manifest of cache {key}; the cache is not used")
    rows, shards = doc.get("rows"), doc.get("shards")
    if not isinstance(rows, int) or not isinstance(shards, list) or not shards:
        raise IntegrityError(f"{where}: 'rows' or 'shards' missing or malformed; the cache is not used")
    parsed = _files(shards, rows, f"{where}: shards")
    tokens = doc.get("tokens", [])
    if not isinstance(tokens, list):
        raise IntegrityError(f"{where}: 'tokens' is not a list; the cache is not used")
    return Manifest(key, rows, parsed, _files(tokens, rows, f"{where}: tokens") if tokens else ())


def _files(entries: list[Any], rows: int, where: str) -> tuple[Shard, ...]:
    """The entries of one list of the manifest, checked; their rows must add up to the manifest's."""
    parsed = tuple(_shard(s, f"{where}[{i}]") for i, s in enumerate(entries))
    if sum(s.rows for s in parsed) != rows:
        raise IntegrityError(f"{where}: the files hold {sum(s.rows for s in parsed)} rows, the manifest says {rows}")
    return parsed


def _shard(doc: Any, where: str) -> Shard:
    if not isinstance(doc, Mapping):
        raise IntegrityError(f"{where}: not a shard entry ({doc!r:.80})")
    name = check_file_name(doc.get("name"), where)
    sha, rows = doc.get("sha256"), doc.get("rows")
    if not is_sha256(sha) or not isinstance(rows, int) or rows < 0:
        raise IntegrityError(f"{where}: the shard {name!r} has no valid sha256 and row count")
    return Shard(name, rows, sha)
