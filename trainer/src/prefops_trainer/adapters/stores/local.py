"""The local filesystem as a :class:`~.Store`: ``file://`` URIs and plain paths (local mode, one machine).

Writes go to a temporary file beside the target (``.<name>.<random>.tmp``), renamed into place, so a reader never
sees half a file; what a killed write leaves is such a temporary file, which :meth:`LocalStore.abort_multipart`
removes. The version of a file is its inode and mtime (every write is a new file, renamed into place). Nothing is
retried: a local failure does not heal by waiting.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Literal

from . import RemoteFile


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * 2**20):
            h.update(chunk)
    return h.hexdigest()


def write_atomically(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Create ``path`` (and its folders) with what ``fill`` writes into it, whole or not at all, with the mode a new
    file gets under the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    write_atomically(path, lambda f: f.write(data))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_temporary(path: Path) -> bool:
    """Whether ``path`` is what :func:`write_atomically` writes before its rename."""
    return path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file()


class LocalStore:
    """This machine's files; a path is absolute."""

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def read(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def write(self, path: str, data: bytes) -> None:
        write_bytes(Path(path), data)

    def names(self, path: str) -> list[str]:
        found = Path(path)
        if found.is_dir():
            return sorted(p.name for p in found.iterdir())
        return [found.name] if found.exists() else []

    def files(self, path: str) -> dict[str, RemoteFile]:
        root = Path(path)
        return {p.relative_to(root).as_posix(): self.stat(str(p)) for p in sorted(root.rglob("*")) if p.is_file()}

    def kind(self, path: str) -> Literal["file", "directory"] | None:
        found = Path(path)
        if not found.exists():
            return None
        return "directory" if found.is_dir() else "file"

    def stat(self, path: str) -> RemoteFile:
        st = os.stat(path)
        return RemoteFile(st.st_size, f"{st.st_ino}:{st.st_mtime_ns}")

    def put(self, local: Path, path: str, sha256: str | None) -> None:
        with local.open("rb") as source:
            write_atomically(Path(path), lambda f: shutil.copyfileobj(source, f, 8 * 2**20))

    def stored_sha256(self, path: str) -> str | None:
        return sha256_file(Path(path)) if Path(path).is_file() else None

    def fetch(self, path: str, dest: Path) -> None:
        shutil.copyfile(path, dest)

    def abort_multipart(self, path: str) -> int:
        root = Path(path)
        left = [p for p in root.rglob(".*.tmp") if _is_temporary(p)] if root.is_dir() else []
        for p in left:
            p.unlink(missing_ok=True)
        return len(left)

    def remove(self, path: str) -> None:
        found = Path(path)
        if found.is_dir() and not found.is_symlink():
            shutil.rmtree(found)
        elif found.exists() or found.is_symlink():
            found.unlink()

    def transient(self, error: BaseException) -> bool:
        return False
