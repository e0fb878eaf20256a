"""The reference log-prob cache on storage: Parquet shards, and a manifest written last.

Layout under ``<storage.uri>/refcache/<key>/``::

    shard-00000-of-00004.parquet   index, ref_chosen_logps, ref_rejected_logps
                                   (KTO: the completion's and the KL completion's log-probs)
    ...
    manifest.json                  written once every shard is present and checked: the cache is complete;
                                   it lists each shard's rows and sha256

The key (``core.cachekey``) hashes everything that changes the numbers, so a sweep over beta or loss types shares
one cache. Every job on the storage trusts it, so a shard is read only when its sha256 is the manifest's, and only
by a name the manifest gives that stays inside the cache folder.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from typing import Any

from ..core.cachekey import Shard, manifest, parse_manifest, shard_name, shard_rows
from ..core.errors import CacheError, IntegrityError
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
        """Write the manifest if every shard is present and it is not there yet; return the manifest or None.

        Each shard is read back and checked (exactly the rows of its range) before its sha256 enters the manifest.
        """
        existing = self.manifest()
        if existing is not None:
            return existing
        if self.missing_shards(num_shards):
            return None
        shards = [self._checked_shard(i, num_shards, n_rows) for i in range(num_shards)]
        doc = manifest(self.key, n_rows, shards, info)
        storage.write_json(self.manifest_uri, doc)
        log.info("reference cache %s complete: %d rows in %d shards", self.key, n_rows, num_shards)
        return doc

    def _checked_shard(self, shard: int, num_shards: int, n_rows: int) -> Shard:
        name = shard_name(shard, num_shards)
        data = storage.read_bytes(self.root.join(name))
        index = _columns(data, str(self.root.join(name)))["index"]
        expected = shard_rows(n_rows, shard, num_shards)
        if sorted(index) != list(expected):
            raise CacheError(
                f"reference cache {self.root}: {name} does not hold rows {expected.start}..{expected.stop - 1} of "
                f"{n_rows}; delete it and re-run that precompute shard"
            )
        return Shard(name, len(index), hashlib.sha256(data).hexdigest())

    def load(self) -> RefTable:
        """index → (ref_chosen_logps, ref_rejected_logps) for every row; requires a complete cache whose shards are
        exactly as the manifest records them."""
        doc = self.manifest()
        if doc is None:
            raise CacheError(f"reference cache {self.root} is incomplete (no manifest.json)")
        checked = parse_manifest(doc, self.key, str(self.manifest_uri))
        out: RefTable = {}
        for shard in checked.shards:
            data = storage.read_bytes(self.root.join(shard.name))
            if hashlib.sha256(data).hexdigest() != shard.sha256:
                raise IntegrityError(
                    f"reference cache {self.root}: {shard.name} has sha256 {hashlib.sha256(data).hexdigest()[:16]}…, "
                    f"the manifest records {shard.sha256[:16]}…: it was altered after the cache was written, and is "
                    f"not used. Delete {self.root} and re-run the precompute phase"
                )
            cols = _columns(data, str(self.root.join(shard.name)))
            for i, c, r in zip(cols["index"], cols["ref_chosen_logps"], cols["ref_rejected_logps"], strict=True):
                out[i] = (c, r)
        if len(out) != checked.rows:
            raise CacheError(f"reference cache {self.root}: manifest says {checked.rows} rows, shards hold {len(out)}")
        return out


def _columns(data: bytes, where: str) -> dict[str, list[Any]]:
    """The columns of one shard; a file that is not such a Parquet table raises naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        cols: dict[str, list[Any]] = pq.read_table(io.BytesIO(data)).to_pydict()
    except (pa.ArrowException, OSError) as e:
        raise IntegrityError(f"{where}: not a readable shard ({e})") from e
    if set(cols) != {"index", "ref_chosen_logps", "ref_rejected_logps"}:
        raise IntegrityError(f"{where}: holds columns {sorted(cols)}, not a reference-cache shard's")
    return cols
