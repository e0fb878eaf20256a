"""Turn model and dataset sources (local path, ``s3://``, ``hf://``) into local files.

``s3://`` sources are copied once into ``$PREFOPS_CACHE_DIR/sources`` (default ``~/.cache/prefops``);
``hf://`` sources go through ``huggingface_hub``, which gives a clear :class:`SourceError` when the Hub
cannot be reached (this project's CI has no internet: pre-stage models on S3 or a volume instead).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from ..core.errors import SourceError
from ..core.uris import Uri
from . import storage

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(os.environ.get("PREFOPS_CACHE_DIR", Path.home() / ".cache" / "prefops"))


def _s3_copy(uri: Uri, field: str) -> Path:
    dest = cache_dir() / "sources" / hashlib.sha256(str(uri).encode()).hexdigest()[:16]
    f = storage.fs(uri)
    try:
        is_file = f.isfile(uri.path)
        is_dir = not is_file and f.isdir(uri.path)
    except (PermissionError, OSError) as e:
        raise SourceError(f"{field}: cannot read {uri}: {e}") from e
    if is_file:
        target = dest / Path(uri.path).name
        if not target.exists() or target.stat().st_size != f.size(uri.path):
            target.parent.mkdir(parents=True, exist_ok=True)
            f.get_file(uri.path, str(target) + ".part")
            os.replace(str(target) + ".part", target)
        return target
    if is_dir:
        log.info("copying %s to %s", uri, dest)
        return storage.download_dir(uri, dest)
    raise SourceError(f"{field}: {uri} does not exist")


def _hub_model(repo: str, revision: str | None, field: str) -> Path:
    name, _, at_rev = repo.partition("@")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, revision=revision or at_rev or None))
    except Exception as e:
        raise SourceError(
            f"{field}: cannot fetch hf://{repo} from the Hugging Face Hub ({type(e).__name__}: {e}). "
            "Without Hub access, copy the model to s3:// or a local path and point the source there."
        ) from e


def local_model(uri: Uri, revision: str | None = None, field: str = "spec.model.source") -> Path:
    """A local directory holding the model at ``uri`` (spec field ``field``)."""
    if uri.scheme == "hf":
        return _hub_model(uri.path, revision, field)
    path = _s3_copy(uri, field) if uri.scheme == "s3" else Path(uri.path)
    if not path.exists():
        raise SourceError(f"{field}: model path {uri.as_written!r} does not exist")
    if not (path / "config.json").exists():
        raise SourceError(f"{field}: {uri.as_written!r} is not a model directory (no config.json in {path})")
    return path


def local_dataset(uri: Uri, field: str = "spec.dataset.source") -> Uri:
    """Where to read the dataset from: a local path, or ``hf://org/name`` left for ``datasets`` to fetch."""
    if uri.scheme == "hf":
        return uri
    path = _s3_copy(uri, field) if uri.scheme == "s3" else Path(uri.path)
    if not path.exists():
        raise SourceError(f"{field}: dataset path {uri.as_written!r} does not exist")
    return Uri("file", str(path), uri.written)
