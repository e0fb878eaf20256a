"""Object storage and local files behind one small interface, on fsspec (s3fs for ``s3://``).

S3 endpoint, region and credentials come from the standard AWS environment variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``...), so any
S3-compatible store works. Single objects are written in one PUT (atomic on S3) or to a temporary file
renamed into place (atomic locally); large files go up in multipart chunks, with botocore's adaptive retries.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from ..core.uris import Uri

log = logging.getLogger(__name__)

#: Part size of multipart uploads (files of two parts or more go up in parts); S3's minimum is 5 MiB.
PART_SIZE = max(5 * 2**20, int(os.environ.get("PREFOPS_S3_PART_SIZE", 16 * 2**20)))


@cache
def _s3() -> Any:
    import s3fs

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return s3fs.S3FileSystem(
        endpoint_url=endpoint,
        default_block_size=PART_SIZE,
        config_kwargs={"retries": {"max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", 8)), "mode": "adaptive"}},
        use_listings_cache=False,
        skip_instance_cache=True,
    )


def fs(uri: Uri) -> Any:
    """The fsspec filesystem serving ``uri`` (an ``fsspec.AbstractFileSystem``)."""
    if uri.is_local:
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem()
    if uri.scheme == "s3":
        return _s3()
    raise ValueError(f"no filesystem for {uri}")


def exists(uri: Uri) -> bool:
    return bool(fs(uri).exists(uri.path))


def read_bytes(uri: Uri) -> bytes:
    return bytes(fs(uri).cat_file(uri.path))


def read_json(uri: Uri) -> Any:
    return json.loads(read_bytes(uri))


def read_json_if_exists(uri: Uri) -> Any | None:
    try:
        return read_json(uri)
    except FileNotFoundError:
        return None


def write_bytes(uri: Uri, data: bytes) -> None:
    """Write ``data`` so a reader sees either nothing or the whole object."""
    if uri.is_local:
        path = Path(uri.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    else:
        fs(uri).pipe_file(uri.path, data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(uri: Uri, obj: Any) -> None:
    write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def list_names(uri: Uri) -> list[str]:
    """Names (not paths) of the entries directly under ``uri``; empty when it does not exist."""
    try:
        entries = fs(uri).ls(uri.path, detail=False)
    except FileNotFoundError:
        return []
    return sorted(Path(e).name for e in entries)


def upload_file(local: Path, uri: Uri) -> None:
    """Copy one local file to ``uri``; on S3 large files go up in multipart chunks."""
    if uri.is_local:
        _copy_local(local, uri)
    else:
        fs(uri).put_file(str(local), uri.path, chunksize=PART_SIZE)


def _copy_local(local: Path, uri: Uri) -> None:
    import shutil

    dest = Path(uri.path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(local, tmp)
    os.replace(tmp, dest)


def remote_sizes(uri: Uri) -> dict[str, int]:
    """Relative path → size of every file under ``uri`` (recursively); empty when it does not exist."""
    f = fs(uri)
    try:
        found = f.find(uri.path, detail=True)
    except FileNotFoundError:
        return {}
    root = uri.path.rstrip("/") + "/"
    return {p[len(root) :]: int(info.get("size") or 0) for p, info in found.items() if p.startswith(root)}


def upload_dir(local: Path, uri: Uri, skip: frozenset[str] = frozenset()) -> list[str]:
    """Copy every file under ``local`` to ``uri``, skipping files already there with the same size.

    Returns the relative paths uploaded. A re-run after an interruption only sends what is missing.
    """
    have = remote_sizes(uri)
    sent = []
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        rel = path.relative_to(local).as_posix()
        if rel in skip or have.get(rel) == path.stat().st_size:
            continue
        upload_file(path, uri.join(rel))
        sent.append(rel)
    return sent


def download_dir(uri: Uri, local: Path) -> Path:
    """Copy every file under ``uri`` into ``local`` (skipping files present with the same size)."""
    f = fs(uri)
    for rel, size in remote_sizes(uri).items():
        dest = local / rel
        if dest.exists() and dest.stat().st_size == size:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        f.get_file(uri.join(rel).path, str(tmp))
        os.replace(tmp, dest)
    return local


def abort_incomplete_uploads(uri: Uri) -> int:
    """Abort multipart uploads under ``uri`` left by a process that died mid-upload; return how many."""
    if uri.is_local:
        return 0
    bucket, _, prefix = uri.path.partition("/")
    client = fs(uri)
    pending = client.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix).get("Uploads", [])
    for upload in pending:
        client.call_s3("abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    if pending:
        log.info("aborted %d unfinished multipart uploads under %s", len(pending), uri)
    return len(pending)


def local_dir(path: Path) -> Path:
    """``path``, created (with its parents) if missing."""
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove(uri: Uri) -> None:
    f = fs(uri)
    if f.exists(uri.path):
        f.rm(uri.path, recursive=True)
