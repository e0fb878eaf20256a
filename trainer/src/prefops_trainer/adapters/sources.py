"""Turn model and dataset sources (local path, ``s3://``, ``hf://``) into local files.

Sources in object storage (``s3://``) are copied into ``$PREFOPS_CACHE_DIR/sources`` (default ``~/.cache/prefops``),
and copied again when the remote objects change (their ETags); ``hf://`` sources go through ``huggingface_hub``. An
outage (no connection, 5xx, 429) is retried with backoff and then ends the phase with exit 1 (a restart may succeed);
a source that is not there, not readable, or the Hub switched off (``HF_HUB_OFFLINE``) is the job's problem (exit 2).
This project's CI has no internet: pre-stage models on S3 or a volume instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from ..core.errors import SourceError, TransientError
from ..core.uris import Uri
from . import storage
from .retry import retrying

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(os.environ.get("PREFOPS_CACHE_DIR", Path.home() / ".cache" / "prefops"))


def _remote_copy(uri: Uri, field: str) -> Path:
    """A current local copy of the object or prefix at ``uri`` (fetched again when the remote one changed)."""
    dest = cache_dir() / "sources" / hashlib.sha256(str(uri).encode()).hexdigest()[:16]
    try:
        found = storage.kind(uri)
        if found == "file":
            return storage.download_file(uri, dest / Path(uri.path).name)
        if found == "directory":
            log.info("copying %s to %s", uri, dest)
            return storage.download_dir(uri, dest)
    except PermissionError as e:
        raise SourceError(f"{field}: not allowed to read {uri} ({e}); check the credentials the job runs with") from e
    raise SourceError(f"{field}: {uri} does not exist")


def _hub_model(repo: str, revision: str | None, field: str) -> Path:
    from huggingface_hub import snapshot_download

    name, _, at_rev = repo.partition("@")

    def fetch() -> str:
        return str(snapshot_download(name, revision=revision or at_rev or None))

    try:
        return Path(retrying(f"{field}: fetching hf://{repo} from the Hugging Face Hub", fetch))
    except TransientError:
        raise
    except Exception as e:
        raise SourceError(
            f"{field}: cannot fetch hf://{repo} from the Hugging Face Hub ({type(e).__name__}: {e}). "
            "Without Hub access, copy the model to s3:// or a local path and point the source there."
        ) from e


def local_model(uri: Uri, revision: str | None = None, field: str = "spec.model.source") -> Path:
    """A local directory holding the model at ``uri`` (spec field ``field``)."""
    if uri.is_hub:
        return _hub_model(uri.path, revision, field)
    path = Path(uri.path) if uri.is_local else _remote_copy(uri, field)
    if not path.exists():
        raise SourceError(f"{field}: model path {uri.as_written!r} does not exist")
    if not (path / "config.json").exists():
        raise SourceError(f"{field}: {uri.as_written!r} is not a model directory (no config.json in {path})")
    return path


def local_dataset(uri: Uri, field: str = "spec.dataset.source") -> Uri:
    """Where to read the dataset from: a local path, or ``hf://org/name`` left for ``datasets`` to fetch."""
    if uri.is_hub:
        return uri
    path = Path(uri.path) if uri.is_local else _remote_copy(uri, field)
    if not path.exists():
        raise SourceError(f"{field}: dataset path {uri.as_written!r} does not exist")
    return Uri("file", str(path), uri.written)


#: the most a model's config.json may weigh: planning reads it, and only it, from storage the job does not control
CONFIG_MAX_BYTES = 1 << 20


def model_config(uri: Uri, revision: str | None = None, field: str = "spec.model.source") -> dict[str, object]:
    """The model's ``config.json`` at ``uri``, parsed, without fetching its weights: a local file, one S3 object, or
    one file from the Hub (``huggingface_hub``'s cache first, so ``HF_HUB_OFFLINE=1`` works once it is cached)."""
    import json

    if uri.is_hub:
        text = _hub_file(uri.path, "config.json", revision, field)
    else:
        target = uri.join("config.json")
        try:
            text = storage.read_bytes(target)
        except FileNotFoundError:
            raise SourceError(f"{field}: no config.json at {uri.as_written!r}") from None
        except PermissionError as e:
            raise SourceError(f"{field}: not allowed to read {target} ({e})") from e
    if len(text) > CONFIG_MAX_BYTES:
        raise SourceError(f"{field}: config.json is {len(text)} bytes, more than a model config ({CONFIG_MAX_BYTES})")
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise SourceError(f"{field}: config.json is not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise SourceError(f"{field}: config.json is not a JSON object")
    return doc


def _hub_file(repo: str, filename: str, revision: str | None, field: str) -> bytes:
    from huggingface_hub import hf_hub_download

    name, _, at_rev = repo.partition("@")

    def fetch() -> str:
        return str(hf_hub_download(name, filename, revision=revision or at_rev or None))

    try:
        return Path(retrying(f"{field}: fetching {filename} of hf://{repo}", fetch)).read_bytes()
    except TransientError:
        raise
    except Exception as e:
        raise SourceError(
            f"{field}: cannot fetch {filename} of hf://{repo} from the Hugging Face Hub ({type(e).__name__}: {e}); "
            "pass it with --model-config, or copy the model to s3:// or a local path"
        ) from e
