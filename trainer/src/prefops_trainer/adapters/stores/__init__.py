"""The storage seam: one :class:`Store` per storage scheme, and the one table that picks it.

A store serves one scheme of ``core.rules.schemes.SCHEMES`` (those reached as ``filesystem`` or ``object-store``);
``adapters.storage`` builds everything else (whole-folder copies checked key by key, checksummed uploads that skip
what arrived, retries through an outage) on these few operations, so it never asks which scheme it talks to. Paths
are a URI's ``path``: ``<bucket>/<key>`` for object storage, an absolute path locally.

Errors, the same for every store: what is absent raises ``FileNotFoundError``; what may not be read or written raises
``PermissionError``; both are the job's problem and are never retried. Any other failure is retried with backoff
exactly when :meth:`Store.transient` says it is an outage (a dropped connection, a 5xx, a 429); local files are
never retried (a full disk does not heal).

Adding a scheme (``gs``, say): a row in ``core.rules.schemes.SCHEMES``, a module here implementing :class:`Store`,
its row in :data:`STORES`, and the behaviour suite (``tests/trainer/test_stores.py``) run against a test server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal, Protocol


@dataclass(frozen=True)
class RemoteFile:
    """An object as the store lists it.

    Attributes:
        size: bytes.
        version: what changes whenever the object is written again: its ETag on S3 (inode and mtime locally); empty when
            the store gives neither, and then a local copy is never taken for current.
    """

    size: int
    version: str


class Store(Protocol):
    """The operations every storage scheme provides (see the module's docstring for its errors)."""

    def exists(self, path: str) -> bool:
        """Whether an object (or a folder, a prefix with objects under it) is at ``path``."""
        ...

    def read(self, path: str) -> bytes:
        """The object's bytes."""
        ...

    def write(self, path: str, data: bytes) -> None:
        """Store ``data`` so a reader sees either the old object, nothing, or the whole new one."""
        ...

    def names(self, path: str) -> list[str]:
        """Names (not paths) of the entries directly under ``path``, sorted; empty when there are none."""
        ...

    def files(self, path: str) -> dict[str, RemoteFile]:
        """Relative key -> object for every object under ``path``, recursively; keys as stored (not vouched for)."""
        ...

    def kind(self, path: str) -> Literal["file", "directory"] | None:
        """``file``, ``directory`` (objects under it), or None when nothing is there."""
        ...

    def stat(self, path: str) -> RemoteFile:
        """The object at ``path``."""
        ...

    def put(self, local: Path, path: str, sha256: str | None) -> None:
        """Copy the local file to ``path`` (in parts when large), whole or not at all; ``sha256``, when given, is
        kept with it for :meth:`stored_sha256`."""
        ...

    def stored_sha256(self, path: str) -> str | None:
        """The sha256 kept with the object at ``path`` (None when it has none, or there is no object)."""
        ...

    def fetch(self, path: str, dest: Path) -> None:
        """Copy the object at ``path`` to the local file ``dest`` (the caller's temporary file)."""
        ...

    def abort_multipart(self, path: str) -> int:
        """Drop the parts of uploads under ``path`` that a process killed mid-upload left; return how many."""
        ...

    def remove(self, path: str) -> None:
        """Remove the object, or everything under the folder, at ``path``; nothing there is no error."""
        ...

    def transient(self, error: BaseException) -> bool:
        """Whether ``error`` (raised by this store) is an outage worth retrying rather than the job's problem."""
        ...


def _local() -> Store:
    from .local import LocalStore

    return LocalStore()


def _s3() -> Store:
    from .s3 import S3Store

    return S3Store()


#: scheme -> its store's maker: one row per storage scheme of ``core.rules.schemes.SCHEMES`` (a test holds them equal).
STORES: dict[str, Callable[[], Store]] = {"file": _local, "s3": _s3}


@cache
def store_for(scheme: str) -> Store:
    """The store serving ``scheme``, made once per process (:func:`forget` makes it anew)."""
    maker = STORES.get(scheme)
    if maker is None:
        raise ValueError(f"no store serves {scheme}:// (storage schemes: {', '.join(STORES)})")
    return maker()


def forget() -> None:
    """Make every store anew on next use: for a process whose storage settings (``AWS_*``) changed."""
    store_for.cache_clear()
