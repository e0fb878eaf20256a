"""The reference log-prob cache on storage: Parquet shards, and a manifest written last.

Layout under ``<storage.uri>/refcache/<key>/``::

    shard-00000-of-00004.parquet   index, ref_chosen_logps, ref_rejected_logps
                                   (KTO: the completion's and the KL completion's log-probs)
    tokens-00000-of-00004.parquet  index, prompt_ids, chosen_ids, rejected_ids: that shard's rows tokenized,
                                   written before its log-probs, so a restarted shard does not tokenize again
    ...
    manifest.json                  written once every shard is present and checked: the cache is complete;
                                   it lists each shard's rows and sha256, and each tokens file's, so the
                                   train phase reads the tokens too (:meth:`RefCache.load_tokens`)

The key (``core.cachekey``) hashes everything that changes the numbers, so a sweep over beta or loss types shares
one cache. Every job on the storage trusts it, so a shard is read only when its sha256 is the manifest's, and only
by a name the manifest gives that stays inside the cache folder.

Until the manifest exists, anyone who can write the bucket can put files in the folder, so a shard or tokens file
found there is adopted (not computed again) only when its own Parquet metadata records this job's run and the key
(``cachekey.not_ours``): an earlier, interrupted attempt of the same job wrote it. Any other (planted before the job
ran, or another job's unfinished precompute) is computed again and replaced, a warning naming it, and finalize counts
only this job's shards into the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..core.cachekey import (
    Shard,
    manifest,
    not_ours,
    origin,
    parse_manifest,
    shard_name,
    shard_rows,
    tokens_name,
)
from ..core.errors import CacheError, IntegrityError
from ..core.uris import Uri
from . import storage

if TYPE_CHECKING:
    from datasets import Dataset

#: The tokenized columns the reference pass reads (``compute.logprobs.TOKEN_COLUMNS``; adapters sit below compute).
TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
#: Rows per Parquet row group of a tokens file.
TOKENS_BATCH = 10_000
#: The Parquet metadata key under which a shard or tokens file records its origin (``cachekey.origin``).
ORIGIN = b"prefops"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefTable:
    """The reference log-probs of a split, columnar: ``chosen[i]`` and ``rejected[i]`` are row ``i``'s (KTO: the
    completion's and the KL completion's), float32 as the shards store them. Eight bytes a row, whatever the row."""

    chosen: npt.NDArray[np.float32]
    rejected: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, index: int) -> tuple[float, float]:
        return float(self.chosen[index]), float(self.rejected[index])

    def column(self, pos: int) -> npt.NDArray[np.float32]:
        """0: the chosen (KTO: completion) log-probs, 1: the rejected (KL completion) ones, by row index."""
        return (self.chosen, self.rejected)[pos]


@dataclass(frozen=True)
class RefCache:
    root: Uri  # <storage.uri>/refcache/<key> (Workspace.refcache)
    key: str
    run: str  # the job's run (Workspace.run): the files it writes record it, and only those are adopted

    @property
    def manifest_uri(self) -> Uri:
        return self.root.join("manifest.json")

    def manifest(self) -> dict[str, Any] | None:
        """The manifest, or None while the cache is incomplete (a partial cache is never used)."""
        found: dict[str, Any] | None = storage.read_json_if_exists(self.manifest_uri)
        return found

    def adopts_shard(self, shard: int, num_shards: int) -> bool:
        """Whether shard ``shard`` is there already, written by this job (an earlier, interrupted attempt), so it is
        not computed again; one that this job did not write is not adopted (a warning names it)."""
        uri = self.root.join(shard_name(shard, num_shards))
        return storage.exists(uri) and self._ours(uri, _origin(storage.read_bytes(uri)))

    def _ours(self, uri: Uri, recorded: Any, then: str = "computing it again") -> bool:
        """Whether the file at ``uri``, recording ``recorded`` as its origin, is this job's; warn naming it if not."""
        why = not_ours(recorded, origin(self.key, self.run))
        if why is not None:
            log.warning("%s: not adopted: %s; %s", uri, why, then)
        return why is None

    @property
    def _origin_metadata(self) -> dict[bytes, bytes]:
        return {ORIGIN: json.dumps(origin(self.key, self.run)).encode()}

    def write_shard(
        self,
        shard: int,
        num_shards: int,
        index: npt.NDArray[np.int64],
        chosen: npt.NDArray[np.float32],
        rejected: npt.NDArray[np.float32],
    ) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(
            {
                "index": pa.array(index, pa.int64()),
                "ref_chosen_logps": pa.array(chosen, pa.float32()),
                "ref_rejected_logps": pa.array(rejected, pa.float32()),
            },
            metadata=self._origin_metadata,
        )
        buf = io.BytesIO()
        pq.write_table(table, buf)
        storage.write_bytes(self.root.join(shard_name(shard, num_shards)), buf.getvalue())

    def tokens_uri(self, shard: int, num_shards: int) -> Uri:
        return self.root.join(tokens_name(shard, num_shards))

    def write_tokens(self, shard: int, num_shards: int, rows: Dataset) -> None:
        """Keep shard ``shard``'s tokenized rows beside its log-probs, so a restarted precompute does not tokenize
        them again. Written to a local file a batch at a time, then copied up whole."""
        import pyarrow.parquet as pq

        cols = rows.select_columns(["index", *TOKEN_COLUMNS]).with_format("arrow")
        schema = cols.features.arrow_schema
        schema = schema.with_metadata({**(schema.metadata or {}), **self._origin_metadata})
        with tempfile.TemporaryDirectory(prefix="prefops-tokens-") as tmp:
            path = Path(tmp) / "tokens.parquet"
            with pq.ParquetWriter(str(path), schema) as out:
                for batch in cols.iter(batch_size=TOKENS_BATCH):  # Dataset.to_parquet held ~2 KB a row
                    out.write_table(batch)
            storage.upload_file(path, self.tokens_uri(shard, num_shards))

    def tokens(self, shard: int, num_shards: int, rows: range) -> Dataset | None:
        """Shard ``shard``'s tokenized rows written by an earlier attempt of this job's precompute, or None (also when
        the file there is not this job's, :meth:`adopts_shard`); a file of this job's that is not exactly those rows'
        tokens raises naming it."""
        uri = self.tokens_uri(shard, num_shards)
        if not storage.exists(uri):
            return None
        import datasets

        with tempfile.TemporaryDirectory(prefix="prefops-tokens-") as tmp:
            local = storage.download_file(uri, Path(tmp) / "tokens.parquet")
            if not self._ours(uri, _origin(local)):
                return None
            _check_token_index(local, rows, uri)
            found = datasets.Dataset.from_parquet(str(local))
        log.info("%s: tokenized rows reused", uri)
        return found

    def missing_shards(self, num_shards: int) -> list[int]:
        present = set(storage.list_names(self.root))
        return [i for i in range(num_shards) if shard_name(i, num_shards) not in present]

    def foreign_shards(self, num_shards: int) -> list[int]:
        """The shards there that this job did not write (:meth:`adopts_shard`): its precompute computes them again."""
        missing = self.missing_shards(num_shards)
        uris = {i: self.root.join(shard_name(i, num_shards)) for i in range(num_shards) if i not in missing}
        then = "its precompute shard computes it again"
        return [i for i, uri in uris.items() if not self._ours(uri, _origin(storage.read_bytes(uri)), then)]

    def finalize(self, num_shards: int, n_rows: int, info: dict[str, Any]) -> dict[str, Any] | None:
        """Write the manifest if every shard is present and this job's and it is not there yet; return the manifest
        or None.

        Each shard is read back and checked (this job's, exactly the rows of its range) before its sha256 enters the
        manifest.
        """
        existing = self.manifest()
        if existing is not None:
            return existing
        if self.missing_shards(num_shards):
            return None
        checked = [self._checked_shard(i, num_shards, n_rows) for i in range(num_shards)]
        shards = [s for s in checked if s is not None]
        if len(shards) < num_shards:
            return None
        doc = manifest(self.key, n_rows, shards, info, self._checked_tokens(num_shards, n_rows))
        storage.write_json(self.manifest_uri, doc)
        log.info("reference cache %s complete: %d rows in %d shards", self.key, n_rows, num_shards)
        return doc

    def _checked_shard(self, shard: int, num_shards: int, n_rows: int) -> Shard | None:
        """Shard ``shard``'s entry in the manifest; None (a warning names it) when this job did not write it."""
        name = shard_name(shard, num_shards)
        data = storage.read_bytes(self.root.join(name))
        if not self._ours(self.root.join(name), _origin(data), "not counted into the manifest until computed again"):
            return None
        index = _columns(data, str(self.root.join(name)))["index"].to_numpy()
        expected = shard_rows(n_rows, shard, num_shards)
        if not np.array_equal(np.sort(index), np.arange(expected.start, expected.stop)):
            raise CacheError(
                f"reference cache {self.root}: {name} does not hold rows {expected.start}..{expected.stop - 1} of "
                f"{n_rows}; delete it and re-run that precompute shard"
            )
        return Shard(name, len(index), hashlib.sha256(data).hexdigest())

    def _checked_tokens(self, num_shards: int, n_rows: int) -> list[Shard] | None:
        """Every shard's tokens file's entry in the manifest, each this job's and holding exactly its shard's rows;
        None when any is missing or not this job's (training then tokenizes, as before)."""
        present = set(storage.list_names(self.root))
        if any(tokens_name(i, num_shards) not in present for i in range(num_shards)):
            return None
        entries = []
        with tempfile.TemporaryDirectory(prefix="prefops-tokens-") as tmp:
            for i in range(num_shards):
                uri = self.tokens_uri(i, num_shards)
                local = storage.download_file(uri, Path(tmp) / tokens_name(i, num_shards))
                if not self._ours(uri, _origin(local), "not listed in the manifest; training tokenizes the split"):
                    return None
                rows = shard_rows(n_rows, i, num_shards)
                _check_token_index(local, rows, uri)
                entries.append(Shard(tokens_name(i, num_shards), len(rows), _file_sha256(local)))
                local.unlink()
        return entries

    def load_tokens(self, into: Path) -> Dataset | None:
        """Every row of the split tokenized, in row order, from the tokens files a complete cache's manifest lists
        (each read only when its sha256 is the manifest's), memory-mapped from ``into``; None when the manifest lists
        none (a cache written by an older prefops, or one whose precompute did not keep every shard's tokens)."""
        doc = self.manifest()
        if doc is None:
            raise CacheError(f"reference cache {self.root} is incomplete (no manifest.json)")
        checked = parse_manifest(doc, self.key, str(self.manifest_uri))
        if not checked.tokens:
            return None
        import datasets

        parts, start = [], 0
        for entry in checked.tokens:
            uri = self.root.join(entry.name)
            local = storage.download_file(uri, storage.local_dir(into) / entry.name)
            if _file_sha256(local) != entry.sha256:
                raise IntegrityError(
                    f"reference cache {self.root}: {entry.name} is not the file the manifest records (sha256): it was "
                    f"altered after the cache was written, and is not used. Delete {self.root} and re-run precompute"
                )
            _check_token_index(local, range(start, start + entry.rows), uri)
            parts.append(datasets.Dataset.from_parquet(str(local), cache_dir=str(into / "arrow")))
            start += entry.rows
        log.info("reference cache %s: the train split's tokens read (%d rows), not tokenized again", self.key, start)
        return datasets.concatenate_datasets(parts)

    def load(self) -> RefTable:
        """The reference log-probs of every row, by row index; requires a complete cache whose shards are exactly
        as the manifest records them. Read a shard at a time into two float32 arrays."""
        doc = self.manifest()
        if doc is None:
            raise CacheError(f"reference cache {self.root} is incomplete (no manifest.json)")
        checked = parse_manifest(doc, self.key, str(self.manifest_uri))
        chosen = np.full(checked.rows, np.nan, dtype=np.float32)
        rejected = np.full(checked.rows, np.nan, dtype=np.float32)
        seen = np.zeros(checked.rows, dtype=bool)
        for shard in checked.shards:
            cols = _columns(self._verified(shard), str(self.root.join(shard.name)))
            index = cols["index"].to_numpy()
            if len(index) and (index.min() < 0 or index.max() >= checked.rows or seen[index].any()):
                raise CacheError(f"reference cache {self.root}: {shard.name} holds rows outside 0..{checked.rows - 1}"
                                 " or rows another shard holds")  # fmt: skip
            seen[index] = True
            chosen[index] = cols["ref_chosen_logps"].to_numpy()
            rejected[index] = cols["ref_rejected_logps"].to_numpy()
        if not seen.all():
            raise CacheError(f"reference cache {self.root}: manifest says {checked.rows} rows, shards hold "
                             f"{int(seen.sum())}")  # fmt: skip
        return RefTable(chosen, rejected)

    def _verified(self, shard: Shard) -> bytes:
        """The shard's bytes, when their sha256 is the manifest's."""
        data = storage.read_bytes(self.root.join(shard.name))
        if hashlib.sha256(data).hexdigest() != shard.sha256:
            raise IntegrityError(
                f"reference cache {self.root}: {shard.name} has sha256 {hashlib.sha256(data).hexdigest()[:16]}…, "
                f"the manifest records {shard.sha256[:16]}…: it was altered after the cache was written, and is "
                f"not used. Delete {self.root} and re-run the precompute phase"
            )
        return data


def _origin(source: bytes | Path) -> Any:
    """The origin a shard or tokens file (its bytes, or a local path) records in its Parquet metadata; None when it
    records none or is not a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(io.BytesIO(source) if isinstance(source, bytes) else str(source)).metadata or {}
        return json.loads(meta[ORIGIN]) if ORIGIN in meta else None
    except (pa.ArrowException, OSError, ValueError):
        return None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _check_token_index(path: Path, rows: range, uri: Uri) -> None:
    """A tokens file holds the token columns of exactly ``rows``, in order; anything else raises naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        found = pq.ParquetFile(str(path))
        names = set(found.schema_arrow.names)
        index = found.read(columns=["index"]).column("index").to_numpy() if "index" in names else None
    except (pa.ArrowException, OSError) as e:
        raise IntegrityError(f"{uri}: not a readable tokens file ({e}); delete it") from e
    expected = np.arange(rows.start, rows.stop)
    if names != {"index", *TOKEN_COLUMNS} or index is None or not np.array_equal(index, expected):
        raise CacheError(f"{uri}: does not hold the tokens of rows {rows.start}..{rows.stop - 1}; delete it")


def _columns(data: bytes, where: str) -> dict[str, Any]:
    """The columns of one shard (Arrow arrays of float32 or int64); a file that is not such a Parquet table raises
    naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as e:
        raise IntegrityError(f"{where}: not a readable shard ({e})") from e
    if set(table.column_names) != {"index", "ref_chosen_logps", "ref_rejected_logps"}:
        raise IntegrityError(f"{where}: holds columns {sorted(table.column_names)}, not a reference-cache shard's")
    if any(table.column(c).null_count for c in table.column_names):
        raise IntegrityError(f"{where}: has empty cells, not a reference-cache shard's")
    try:
        return {
            "index": table.column("index").cast(pa.int64()),
            "ref_chosen_logps": table.column("ref_chosen_logps").cast(pa.float32()),
            "ref_rejected_logps": table.column("ref_rejected_logps").cast(pa.float32()),
        }
    except pa.ArrowException as e:
        raise IntegrityError(f"{where}: its columns are not numbers ({e})") from e
