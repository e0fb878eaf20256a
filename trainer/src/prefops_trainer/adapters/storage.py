"""Object storage and local files behind one small interface, on fsspec (s3fs for ``s3://``).

S3 endpoint, region and credentials come from the standard AWS environment variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``...), so any
S3-compatible store works. Single objects are written in one PUT (atomic on S3) or to a temporary file
renamed into place (atomic locally); large files go up in multipart chunks. Every S3 call rides out an outage:
botocore's own quick retries, then :func:`..retry.retrying` with backoff for up to ``$PREFOPS_RETRY_SECONDS``.

What comes back from a bucket is untrusted: a key becomes a local path only when it stays inside the target folder
(``core.integrity``), and a local copy counts as current only while the object's ETag and size and the local file's
size and mtime are those recorded when it was copied (a sidecar ``.<folder>.downloads.json``), so an object replaced
by another of the same size is fetched again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from ..core.errors import IntegrityError
from ..core.integrity import check_keys
from ..core.uris import Uri
from .retry import retrying

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Part size of multipart uploads (files of two parts or more go up in parts); S3's minimum is 5 MiB.
PART_SIZE = max(5 * 2**20, int(os.environ.get("PREFOPS_S3_PART_SIZE", 16 * 2**20)))
#: Files a checkpoint's or the trained weights' transfer fetches, hashes or uploads at once (:func:`each`).
TRANSFER_THREADS = max(1, int(os.environ.get("PREFOPS_TRANSFER_THREADS", 8)))


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


def _retried(what: str, uri: Uri, call: Callable[[], T]) -> T:
    """``call()``; on S3 retried through an outage (local files fail at once: a full disk does not heal)."""
    return call() if uri.is_local else retrying(f"{what} {uri}", call)


def exists(uri: Uri) -> bool:
    return _retried("checking", uri, lambda: bool(fs(uri).exists(uri.path)))


def read_bytes(uri: Uri) -> bytes:
    return _retried("reading", uri, lambda: bytes(fs(uri).cat_file(uri.path)))


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
        _write_local(Path(uri.path), data)
    else:
        _retried("writing", uri, lambda: fs(uri).pipe_file(uri.path, data))


def _write_local(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_bytes(obj: Any) -> bytes:
    """``obj`` as :func:`write_json` writes it."""
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()


def json_loads(data: bytes, where: str) -> Any:
    """``data`` parsed; :class:`IntegrityError` naming ``where`` when it is not JSON."""
    try:
        return json.loads(data)
    except ValueError as e:
        raise IntegrityError(f"{where}: not JSON ({e}); it is not used") from e


def write_json(uri: Uri, obj: Any) -> None:
    write_bytes(uri, json_bytes(obj))


def list_names(uri: Uri) -> list[str]:
    """Names (not paths) of the entries directly under ``uri``; empty when it does not exist."""

    def names() -> list[str]:
        try:
            entries = fs(uri).ls(uri.path, detail=False)
        except FileNotFoundError:
            return []
        return sorted({Path(e).name for e in entries})

    return _retried("listing", uri, names)


def upload_file(local: Path, uri: Uri, sha256: str | None = None) -> None:
    """Copy one local file to ``uri``; on S3 large files go up in multipart chunks. ``sha256``, when given, is
    stored with the object (S3 user metadata ``x-amz-meta-sha256``), for :func:`stored_sha256`."""
    if uri.is_local:
        _copy_local(local, uri)
    else:
        meta = {"Metadata": {"sha256": sha256}} if sha256 else {}
        _retried("uploading to", uri, lambda: fs(uri).put_file(str(local), uri.path, chunksize=PART_SIZE, **meta))


def stored_sha256(uri: Uri) -> str | None:
    """The sha256 of the file at ``uri``: on S3 the one it was uploaded with (None when it carries none), locally its
    content's; None when there is no file. An S3 object appears whole or not at all, with its metadata."""
    if uri.is_local:
        return sha256_file(Path(uri.path)) if Path(uri.path).is_file() else None

    def head() -> str | None:
        try:
            found: dict[str, str] = fs(uri).metadata(uri.path)
        except FileNotFoundError:
            return None
        return found.get("sha256")

    return _retried("looking up", uri, head)


def _copy_local(local: Path, uri: Uri) -> None:
    import shutil

    dest = Path(uri.path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(local, tmp)
    os.replace(tmp, dest)


@dataclass(frozen=True)
class RemoteFile:
    """An object as the store lists it.

    Attributes:
        size: bytes.
        version: what changes whenever the object is written again: its ETag on S3 (the mtime locally); empty when
            the store gives neither, and then a local copy is never taken for current.
    """

    size: int
    version: str


def _remote_file(info: dict[str, Any]) -> RemoteFile:
    version = info.get("ETag") or info.get("etag") or info.get("mtime") or ""
    return RemoteFile(int(info.get("size") or 0), str(version).strip('"'))


def remote_files(uri: Uri) -> dict[str, RemoteFile]:
    """Relative key → object for every object under ``uri`` (recursively); empty when there is none. Zero-byte
    keys ending in ``/`` (the folder markers some consoles create) are not files and are left out. The keys are as
    stored: nothing here vouches that they make safe paths (:func:`download_dir` checks)."""

    def listing() -> dict[str, RemoteFile]:
        try:
            found = fs(uri).find(uri.path, detail=True)
        except FileNotFoundError:
            return {}
        root = uri.path.rstrip("/") + "/"
        files = {p[len(root) :]: _remote_file(info) for p, info in found.items() if p.startswith(root)}
        return {rel: f for rel, f in files.items() if not (rel.endswith("/") and f.size == 0)}

    return _retried("listing", uri, listing)


def kind(uri: Uri) -> str | None:
    """``file`` or ``directory`` (a prefix with objects under it), or None when nothing is there."""

    def probe() -> str | None:
        try:
            info = fs(uri).info(uri.path)
        except FileNotFoundError:
            return None
        return "directory" if info.get("type") == "directory" else "file"

    return _retried("looking up", uri, probe)


def upload_dir(local: Path, uri: Uri, skip: frozenset[str] = frozenset()) -> list[str]:
    """Copy every file under ``local`` to ``uri``, each with its sha256, skipping files already there with the same
    sha256 (never by size alone: an earlier attempt may have left other content of the same size).

    Returns the relative paths uploaded. A re-run after an interruption only sends what is missing.
    """
    sent = []
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        rel, digest = path.relative_to(local).as_posix(), sha256_file(path)
        if rel in skip or stored_sha256(uri.join(rel)) == digest:
            continue
        upload_file(path, uri.join(rel), sha256=digest)
        sent.append(rel)
    return sent


def download_dir(uri: Uri, local: Path) -> Path:
    """Make ``local`` a copy of the files under ``uri``, fetching what is not current, and deleting local files the
    copy does not hold. Every key is checked before anything is fetched: one that would land outside ``local``
    (``..``, an empty segment, a leading ``/``), one with a segment longer than a file name may be, or one that
    another key makes a folder (``x`` beside ``x/y``) raises IntegrityError."""
    files = remote_files(uri)
    check_keys(files, str(uri))
    root = local_dir(local).resolve()
    index = _Copies(root)
    for rel, remote in sorted(files.items()):
        dest = _inside(root, rel, uri)
        if not index.current(rel, remote, dest):
            fetch_file(uri.join(rel), dest)
            index.record(rel, remote, dest)
    for stale in [p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() not in files]:
        if not is_part(stale):  # another process's fetch in flight
            stale.unlink()
    return local


def is_part(path: Path) -> bool:
    """Whether ``path`` is a fetch in flight (:func:`fetch_file`'s temporary file)."""
    return path.name.startswith(".") and path.name.endswith(".part")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * 2**20):
            h.update(chunk)
    return h.hexdigest()


def download_file(uri: Uri, dest: Path) -> Path:
    """Make ``dest`` a current copy of the object at ``uri`` (fetched unless the recorded copy is current)."""
    remote = _retried("looking up", uri, lambda: _remote_file(fs(uri).info(uri.path)))
    index = _Copies(local_dir(dest.parent))
    if not index.current(dest.name, remote, dest):
        fetch_file(uri, dest)
        index.record(dest.name, remote, dest)
    return dest


def _inside(root: Path, rel: str, uri: Uri) -> Path:
    dest = root / rel
    if not dest.resolve().is_relative_to(root):
        raise IntegrityError(f"refusing the object {str(uri.join(rel))!r}: its file would land outside {root}")
    return dest


def fetch_file(uri: Uri, dest: Path) -> None:
    """Copy one object to ``dest`` through a temporary file of its own (ranks fetching at once do not collide); the
    caller has made sure ``dest`` is where it belongs."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".", suffix=".part")  # a short name: any file name fits
    os.close(fd)
    try:
        _retried("downloading", uri, lambda: fs(uri).get_file(uri.path, tmp))
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


class _Copies:
    """What was copied into a folder: per relative path, the object's version and size and the local file's size and
    mtime once copied, in a sidecar ``.<folder>.downloads.json`` beside the folder (never inside it, so the folder
    holds exactly the remote files)."""

    def __init__(self, root: Path) -> None:
        self.path = root.parent / f".{root.name}.downloads.json"
        try:
            loaded = json.loads(self.path.read_text())
        except (OSError, ValueError):
            loaded = {}
        self.entries: dict[str, Any] = loaded if isinstance(loaded, dict) else {}

    def current(self, rel: str, remote: RemoteFile, dest: Path) -> bool:
        seen = self.entries.get(rel)
        if not remote.version or not isinstance(seen, dict) or not dest.is_file():
            return False
        st = dest.stat()
        return seen == {"version": remote.version, "size": remote.size, "localSize": st.st_size,
                        "mtimeNs": st.st_mtime_ns}  # fmt: skip

    def record(self, rel: str, remote: RemoteFile, dest: Path) -> None:
        st = dest.stat()
        self.entries[rel] = {"version": remote.version, "size": remote.size, "localSize": st.st_size,
                             "mtimeNs": st.st_mtime_ns}  # fmt: skip
        _write_local(self.path, json.dumps(self.entries, sort_keys=True).encode())


def abort_incomplete_uploads(uri: Uri) -> int:
    """Abort multipart uploads under ``uri`` left by a process that died mid-upload; return how many."""
    if uri.is_local:
        return 0
    bucket, _, prefix = uri.path.partition("/")
    client = fs(uri)

    def abort() -> list[Any]:
        found = client.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix).get("Uploads", [])
        for upload in found:
            client.call_s3("abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        return list(found)

    pending = _retried("aborting unfinished uploads under", uri, abort)
    if pending:
        log.info("aborted %d unfinished multipart uploads under %s", len(pending), uri)
    return len(pending)


def each(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``fn`` of every item, in order, on up to :data:`TRANSFER_THREADS` threads (downloads, uploads and sha256 all
    release the interpreter while they wait or hash). The first error is raised once the items already started have
    ended; the rest are not started."""
    todo = list(items)
    if len(todo) < 2 or TRANSFER_THREADS == 1:
        return [fn(item) for item in todo]
    pool = ThreadPoolExecutor(max_workers=min(TRANSFER_THREADS, len(todo)), thread_name_prefix="prefops-transfer")
    try:
        return [f.result() for f in [pool.submit(fn, item) for item in todo]]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def local_dir(path: Path) -> Path:
    """``path``, created (with its parents) if missing."""
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove(uri: Uri) -> None:
    def rm() -> None:
        f = fs(uri)
        if f.exists(uri.path):
            f.rm(uri.path, recursive=True)

    _retried("removing", uri, rm)
