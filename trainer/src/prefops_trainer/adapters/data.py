"""Load a preference dataset and check it row by row, so a bad row is named before any compute starts.

Accepted: JSONL, JSON, Parquet files; folders of such files (split taken from the file names, as the Hub
lays them out); folders written by ``datasets.save_to_disk``; ``hf://org/name``. Rows are either plain
(``prompt``/``chosen``/``rejected`` strings) or conversational (each a list of ``{role, content}`` messages,
rendered with the tokenizer's chat template). Conversational rows may leave the prompt implicit, as the
shared leading messages of ``chosen`` and ``rejected`` (TRL's implicit-prompt form).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.algorithms import Data
from ..core.errors import DataError, SourceError, TransientError
from ..core.spec import DatasetSpec
from ..core.uris import Uri
from .retry import retrying
from .sources import local_dataset

if TYPE_CHECKING:
    from datasets import Dataset

COLUMNS = ("prompt", "chosen", "rejected")
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
#: The JSON reader parses 1 MiB at a time (datasets' default, 10 MiB, costs about 90 MB of peak memory).
_READ_OPTIONS: dict[str, dict[str, Any]] = {"json": {"chunksize": 1 << 20}, "parquet": {}}


@dataclass(frozen=True)
class LoadedDataset:
    rows: Dataset  # the algorithm's columns (``Algorithm.data``) and an ``index`` column
    source: str
    conversational: bool

    def __len__(self) -> int:
        return len(self.rows)


def load_split(spec: DatasetSpec, split: str | None = None, kind: Data = "paired") -> LoadedDataset:
    """Load ``split`` (default ``spec.split``) of ``spec.source``, check every row, and number the rows.

    ``kind`` is what the algorithm reads (``Algorithm.data``): ``paired`` rows; ``unpaired`` rows
    (prompt/completion/label, paired rows converted with TRL's ``unpair_preference_dataset``); or ``prompts``.
    """
    split = split or spec.split
    uri = local_dataset(spec.source)
    name = spec.source.as_written if uri.is_hub else str(Path(spec.source.as_written))
    if split != spec.split and not uri.is_hub and Path(uri.path).is_file():
        raise DataError(
            f"{name}: a single file holds one split, so spec.dataset.evalSplit {split!r} cannot be read from it; put "
            f"each split in a folder as <split>.jsonl (e.g. {spec.split}.jsonl and {split}.jsonl) and point "
            "spec.dataset.source at the folder"
        )
    ds = _load(uri, split, name)
    if spec.max_samples is not None and len(ds) > spec.max_samples:
        ds = ds.select(range(spec.max_samples))
    if len(ds) == 0:
        raise DataError(f"{name}: the dataset is empty (split {split!r}); it needs at least one row")
    if kind == "prompts":
        conversational = check_rows(ds, name, ("prompt",))
        ds = ds.select_columns(["prompt"])
    elif kind == "unpaired" and "completion" in ds.column_names:
        conversational = check_rows(ds, name, ("prompt", "completion"))
        check_labels(ds, name)
        ds = ds.select_columns(["prompt", "completion", "label"])
    else:
        conversational = check_rows(ds, name, COLUMNS)
        ds = ds.select_columns([c for c in COLUMNS if c in ds.column_names])
        if kind == "unpaired":
            from trl.data_utils import unpair_preference_dataset

            ds = unpair_preference_dataset(ds)
    ds = ds.add_column("index", np.arange(len(ds), dtype=np.int64))
    return LoadedDataset(ds, name, conversational)


def _load(uri: Uri, split: str, name: str) -> Dataset:
    import datasets

    datasets.disable_progress_bars()
    if uri.is_hub:
        try:
            return retrying(f"spec.dataset.source: loading {name} from the Hugging Face Hub",
                            lambda: datasets.load_dataset(uri.path, split=split))  # fmt: skip
        except TransientError:
            raise
        except Exception as e:
            raise SourceError(
                f"spec.dataset.source: cannot load {name} from the Hugging Face Hub ({type(e).__name__}: {e}). "
                "Without Hub access, copy the data to s3:// or a local path."
            ) from e
    path = Path(uri.path)
    try:
        if path.is_file():
            builder = FILE_BUILDERS.get(path.suffix)
            if builder is None:
                raise DataError(f"{name}: unsupported file type {path.suffix!r}; use .jsonl, .json or .parquet")
            if builder == "json" and not path.read_bytes().strip():
                raise DataError(f"{name}: the dataset is empty (the file has no rows); it needs at least one pair")
            return datasets.load_dataset(builder, data_files=str(path), split="train", **_READ_OPTIONS[builder])
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DataError(f"{name}: no split {split!r}; it has {', '.join(loaded)}")
                return loaded[split]
            return loaded
        return datasets.load_dataset(str(path), split=split)
    except DataError:
        raise
    except ValueError as e:
        if "Unknown split" in str(e) or "split" in str(e).lower():
            raise DataError(f"{name}: no split {split!r} ({e})") from e
        raise DataError(f"{name}: cannot read the dataset: {e}") from e
    except (datasets.exceptions.DatasetGenerationError, json.JSONDecodeError, OSError) as e:
        cause = e.__cause__ or e
        raise DataError(f"{name}: cannot read the dataset: {cause}") from e


def _kind(value: Any) -> str | None:
    """'text' for a non-empty string, 'chat' for a non-empty list of {role, content} messages, else None."""
    if isinstance(value, str):
        return "text" if value else None
    if isinstance(value, list) and value:
        ok = all(isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in value)
        return "chat" if ok else None
    return None


def check_rows(ds: Dataset, name: str, columns: tuple[str, ...]) -> bool:
    """Check every row's ``columns`` (strings or chat messages, one form throughout); return whether the data is
    conversational. Raise naming the row. A conversational prompt may be implicit in chosen/rejected."""
    present = set(ds.column_names)
    needed = [c for c in columns if c != "prompt" or columns == ("prompt",) or "completion" in columns]
    missing = [c for c in needed if c not in present]
    if missing:
        raise DataError(
            f"{name}: row 0: missing column {', '.join(map(repr, missing))} (the rows have "
            f"{', '.join(sorted(present)) or 'no columns'}); each row needs {', '.join(columns)}"
        )
    expected = None
    for i, row in enumerate(ds):
        cols = [c for c in columns if c in present or c in needed]
        kinds = {}
        for col in cols:
            kind = _kind(row.get(col))
            if kind is None:
                raise DataError(
                    f"{name}: row {i}: column {col!r} is missing, empty or malformed (got {row.get(col)!r:.80}); "
                    "it must be a string or a list of {role, content} messages"
                )
            kinds[col] = kind
        row_kind = "chat" if set(kinds.values()) == {"chat"} else "text" if set(kinds.values()) == {"text"} else None
        if row_kind is None:
            raise DataError(f"{name}: row {i}: mixes plain strings and chat messages across {', '.join(kinds)}")
        if expected is None:
            expected = row_kind
            if row_kind == "text" and "prompt" not in present:
                raise DataError(f"{name}: row 0: missing column 'prompt' (plain-text rows need an explicit prompt)")
        elif row_kind != expected:
            raise DataError(f"{name}: row {i}: is {row_kind} but earlier rows are {expected}; use one form")
    return expected == "chat"


def check_labels(ds: Dataset, name: str) -> None:
    """Unpaired rows need a boolean ``label`` (true: a desirable completion) and both kinds of label."""
    if "label" not in ds.column_names:
        raise DataError(f"{name}: row 0: missing column 'label' (unpaired rows need prompt, completion and label)")
    labels = ds["label"]
    for i, label in enumerate(labels):
        if not isinstance(label, bool):
            raise DataError(f"{name}: row {i}: label must be true or false, got {label!r}")
    if len(set(labels)) < 2:
        raise DataError(f"{name}: every label is {labels[0]}; KTO needs desirable and undesirable examples")


def fingerprint(ds: Dataset) -> str:
    """A content hash of the rows as training sees them (in order, without our ``index`` column)."""
    h = hashlib.sha256()
    cols = [c for c in ds.column_names if c != "index"]
    for batch in ds.select_columns(cols).iter(batch_size=1024):
        h.update(json.dumps(batch, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def rows_digest(ds: Dataset) -> str:
    """The sha256 of the rows as training reads them (in order, after ``maxSamples``, without our ``index`` column),
    one canonical JSON object per line: keys sorted, no spaces, UTF-8, each line ending in a newline. Anyone can
    recompute it from the dataset file with a JSON library (the lineage in ``prefops.json``)."""
    h = hashlib.sha256()
    cols = [c for c in ds.column_names if c != "index"]
    for row in ds.select_columns(cols):
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
    return h.hexdigest()
