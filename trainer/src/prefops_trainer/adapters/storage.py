"""Storage as the phases use it: objects and folders at a :class:`Uri`, whichever scheme serves it.

Each operation asks the scheme's store (``adapters.stores``: S3, the local filesystem) and never branches on the
scheme itself. Single objects are written whole or not at all; large files go up in parts. Every call rides out an
outage the store calls transient: the client's own quick retries, then :func:`..retry.retrying` with backoff for up to
``$PREFOPS_RETRY_SECONDS`` (a store that calls nothing transient, the local one, fails at once).

What comes back from a bucket is untrusted: a key becomes a local path only when it stays inside the target folder
(``core.integrity``), and a local copy counts as current only while the object's version (ETag) and size and the
local file's size and mtime are those recorded when it was copied (a sidecar ``.<folder>.downloads.json``), so an
object replaced by another of the same size is fetched again.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..core.errors import IntegrityError
from ..core.integrity import check_keys
from ..core.uris import Uri as Uri
from .retry import retrying
from .stores import RemoteFile as RemoteFile
from .stores import Store, store_for
from .stores.local import sha256_file as sha256_file
from .stores.local import write_bytes as _write_local

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Files a checkpoint's or the trained weights' transfer fetches, hashes or uploads at once (:func:`each`).
TRANSFER_THREADS = max(1, int(os.environ.get("PREFOPS_TRANSFER_THREADS", 8)))


def _retried(what: str, uri: Uri, call: Callable[[Store], T]) -> T:
    """``call(store)`` with the store serving ``uri``, retried through what that store calls an outage."""
    store = store_for(uri.scheme)
    return retrying(f"{what} {uri}", lambda: call(store), store.transient)


def exists(uri: Uri) -> bool:
    return _retried("checking", uri, lambda store: store.exists(uri.path))


def read_bytes(uri: Uri) -> bytes:
    return _retried("reading", uri, lambda store: store.read(uri.path))


def read_json(uri: Uri) -> Any:
    return json.loads(read_bytes(uri))


def read_json_if_exists(uri: Uri) -> Any | None:
    try:
        return read_json(uri)
    except FileNotFoundError:
        return None


def write_bytes(uri: Uri, data: bytes) -> None:
    """Write ``data`` so a reader sees either nothing or the whole object."""
    _retried("writing", uri, lambda store: store.write(uri.path, data))


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
    return _retried("listing", uri, lambda store: store.names(uri.path))


def upload_file(local: Path, uri: Uri, sha256: str | None = None) -> None:
    """Copy one local file to ``uri``, whole or not at all; large files go up in parts. ``sha256``, when given, is
    kept with the object (on S3 its user metadata ``x-amz-meta-sha256``), for :func:`stored_sha256`."""
    _retried("uploading to", uri, lambda store: store.put(local, uri.path, sha256))


def stored_sha256(uri: Uri) -> str | None:
    """The sha256 of the file at ``uri``: on S3 the one it was uploaded with (None when it carries none), locally its
    content's; None when there is no file. An S3 object appears whole or not at all, with its metadata."""
    return _retried("looking up", uri, lambda store: store.stored_sha256(uri.path))


def remote_files(uri: Uri) -> dict[str, RemoteFile]:
    """Relative key → object for every object under ``uri`` (recursively); empty when there is none. Zero-byte
    keys ending in ``/`` (the folder markers some consoles create) are not files and are left out. The keys are as
    stored: nothing here vouches that they make safe paths (:func:`download_dir` checks)."""
    return _retried("listing", uri, lambda store: store.files(uri.path))


def kind(uri: Uri) -> str | None:
    """``file`` or ``directory`` (a prefix with objects under it), or None when nothing is there."""
    return _retried("looking up", uri, lambda store: store.kind(uri.path))


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


def download_file(uri: Uri, dest: Path) -> Path:
    """Make ``dest`` a current copy of the object at ``uri`` (fetched unless the recorded copy is current)."""
    remote = _retried("looking up", uri, lambda store: store.stat(uri.path))
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
        _retried("downloading", uri, lambda store: store.fetch(uri.path, Path(tmp)))
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
    """Abort the uploads under ``uri`` that a process killed mid-upload left (S3's multipart uploads, a local temporary
    file); return how many."""
    pending = _retried("aborting unfinished uploads under", uri, lambda store: store.abort_multipart(uri.path))
    if pending:
        log.info("aborted %d unfinished uploads under %s", pending, uri)
    return pending


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
    """Remove the object, or everything under the folder, at ``uri``; nothing there is no error."""
    _retried("removing", uri, lambda store: store.remove(uri.path))
