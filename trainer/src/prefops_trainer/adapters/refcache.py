"""The reference log-prob cache on storage: Parquet shards, and a manifest written last.

Layout under ``<storage.uri>/refcache/<key>/``::

    shard-00000-of-00004.parquet   index, ref_chosen_logps, ref_rejected_logps
                                   (KTO: the completion's and the KL completion's log-probs)
    ...
    manifest.json                  written once every shard is present: the cache is complete

The key (``core.cachekey``) hashes everything that changes the numbers, so a sweep over beta or loss types shares
one cache.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

from ..core.cachekey import manifest, shard_name
from ..core.errors import CacheError
from ..core.uris import Uri
from . import storage

log = logging.getLogger(__name__)

#: index -> (reference log-prob of the chosen completion, of the rejected one); KTO: completion, KL completion.
RefTable = dict[int, tuple[float, float]]


@dataclass(frozen=True)
class RefCache:
    root: Uri  # <storage.uri>/refcache/<key> (Workspace.refcache)
    key: str

    @property
    def manifest_uri(self) -> Uri:
        return self.root.join("manifest.json")

    def manifest(self) -> dict[str, Any] | None:
        """The manifest, or None while the cache is incomplete (a partial cache is never used)."""
        found: dict[str, Any] | None = storage.read_json_if_exists(self.manifest_uri)
        return found

    def has_shard(self, shard: int, num_shards: int) -> bool:
        return storage.exists(self.root.join(shard_name(shard, num_shards)))

    def write_shard(
        self, shard: int, num_shards: int, index: list[int], chosen: list[float], rejected: list[float]
    ) -> None:
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

    def finalize(self, num_shards: int, n_rows: int, info: dict[str, Any]) -> dict[str, Any] | None:
        """Write the manifest if every shard is present and it is not there yet; return the manifest or None."""
        existing = self.manifest()
        if existing is not None:
            return existing
        if self.missing_shards(num_shards):
            return None
        doc = manifest(self.key, n_rows, num_shards, info)
        storage.write_json(self.manifest_uri, doc)
        log.info("reference cache %s complete: %d rows in %d shards", self.key, n_rows, num_shards)
        return doc

    def load(self) -> RefTable:
        """index → (ref_chosen_logps, ref_rejected_logps) for every row; requires a complete cache."""
        import pyarrow.parquet as pq

        doc = self.manifest()
        if doc is None:
            raise CacheError(f"reference cache {self.root} is incomplete (no manifest.json)")
        out: RefTable = {}
        for name in doc["shards"]:
            cols = pq.read_table(io.BytesIO(storage.read_bytes(self.root.join(name)))).to_pydict()
            for i, c, r in zip(cols["index"], cols["ref_chosen_logps"], cols["ref_rejected_logps"], strict=True):
                out[i] = (c, r)
        if len(out) != doc["rows"]:
            raise CacheError(f"reference cache {self.root}: manifest says {doc['rows']} rows, shards hold {len(out)}")
        return out
