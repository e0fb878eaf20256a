"""The reference log-prob cache: a content key, Parquet shards, and a manifest written last.

Layout under ``<storage.uri>/refcache/<key>/``::

    shard-00000-of-00004.parquet   index, ref_chosen_logps, ref_rejected_logps
                                   (KTO: the completion's and the KL completion's log-probs)
    ...
    manifest.json                  written once every shard is present: the cache is complete

The key hashes everything that changes the numbers: the model folder's files (weights, config, tokenizer,
chat template), the dataset rows, ``maxLength``, ``truncationMode``, the dtype, and this format's version.
Anything else (beta, loss type, learning rate...) does not enter it, so a sweep shares one cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass

from ..core.errors import CacheError
from ..core.uris import Uri
from . import storage

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
COLUMNS = ("index", "ref_chosen_logps", "ref_rejected_logps")


def cache_key(
    model_files: dict[str, str],
    data_fingerprint: str,
    max_length: int,
    truncation: str,
    dtype: str,
    extra: dict | None = None,
) -> str:
    """A stable hex key (32 chars) for the inputs that determine the reference log-probs. Pure.

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
    """The contiguous row range shard ``shard`` of ``num_shards`` owns. Pure."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"--shard must be in [0, {num_shards}), got {shard}")
    return range(n_rows * shard // num_shards, n_rows * (shard + 1) // num_shards)


@dataclass(frozen=True)
class RefCache:
    root: Uri  # <storage.uri>/refcache/<key>
    key: str

    @classmethod
    def at(cls, storage_uri: Uri, key: str) -> RefCache:
        return cls(storage_uri.join("refcache", key), key)

    @property
    def manifest_uri(self) -> Uri:
        return self.root.join("manifest.json")

    def manifest(self) -> dict | None:
        """The manifest, or None while the cache is incomplete (a partial cache is never used)."""
        return storage.read_json_if_exists(self.manifest_uri)

    def has_shard(self, shard: int, num_shards: int) -> bool:
        return storage.exists(self.root.join(shard_name(shard, num_shards)))

    def write_shard(self, shard: int, num_shards: int, index, chosen, rejected) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(
            {
                "index": pa.array(index, pa.int64()),
                "ref_chosen_logps": pa.array(chosen, pa.float32()),
                "ref_rejected_logps": pa.array(rejected, pa.float32()),
            }
        )
        buf = io.BytesIO()
        pq.write_table(table, buf)
        storage.write_bytes(self.root.join(shard_name(shard, num_shards)), buf.getvalue())

    def missing_shards(self, num_shards: int) -> list[int]:
        present = set(storage.list_names(self.root))
        return [i for i in range(num_shards) if shard_name(i, num_shards) not in present]

    def finalize(self, num_shards: int, n_rows: int, info: dict) -> dict | None:
        """Write the manifest if every shard is present and it is not there yet; return the manifest or None."""
        existing = self.manifest()
        if existing is not None:
            return existing
        if self.missing_shards(num_shards):
            return None
        manifest = {
            "key": self.key,
            "format": FORMAT_VERSION,
            "rows": n_rows,
            "shards": [shard_name(i, num_shards) for i in range(num_shards)],
            **info,
        }
        storage.write_json(self.manifest_uri, manifest)
        log.info("reference cache %s complete: %d rows in %d shards", self.key, n_rows, num_shards)
        return manifest

    def load(self) -> dict[int, tuple[float, float]]:
        """index → (ref_chosen_logps, ref_rejected_logps) for every row; requires a complete cache."""
        import pyarrow.parquet as pq

        manifest = self.manifest()
        if manifest is None:
            raise CacheError(f"reference cache {self.root} is incomplete (no manifest.json)")
        out: dict[int, tuple[float, float]] = {}
        for name in manifest["shards"]:
            table = pq.read_table(io.BytesIO(storage.read_bytes(self.root.join(name))))
            cols = table.to_pydict()
            for i, c, r in zip(cols["index"], cols["ref_chosen_logps"], cols["ref_rejected_logps"], strict=True):
                out[i] = (c, r)
        if len(out) != manifest["rows"]:
            raise CacheError(
                f"reference cache {self.root}: manifest says {manifest['rows']} rows, shards hold {len(out)}"
            )
        return out
