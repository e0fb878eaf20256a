"""Checks on what comes back from object storage, which is untrusted input. Pure.

Object keys become local paths only when they stay inside their folder; files are compared with the sha256 table
recorded when they were written (a checkpoint's completion marker, the reference cache's manifest).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TypeGuard

from .errors import IntegrityError

#: Why a relative key is refused, by the first test it fails.
_BAD_KEY = (
    (lambda rel: rel.startswith("/"), "begins with '/'"),
    (lambda rel: "\\" in rel or "\0" in rel, "holds a backslash or a NUL byte"),
    (lambda rel: ".." in rel.split("/"), "has a '..' segment"),
    (lambda rel: "." in rel.split("/"), "has a '.' segment"),
    (lambda rel: "" in rel.split("/"), "has an empty segment ('//' or a trailing '/')"),
)


def key_problem(rel: str) -> str | None:
    """Why ``rel`` (a key relative to the prefix being copied) cannot become a path inside the target folder; None
    when it can."""
    return next((why for test, why in _BAD_KEY if test(rel)), None)


def check_relative_key(rel: str, prefix: str) -> str:
    """``rel`` unchanged when it stays inside its folder; :class:`IntegrityError` naming the whole key otherwise."""
    why = key_problem(rel)
    if why is not None:
        key = f"{prefix.rstrip('/')}/{rel}"
        raise IntegrityError(
            f"refusing the object {key!r} under {prefix}: its key {why}, so its file would land outside the folder "
            "it is copied into. Nothing was copied. Remove that object; whoever wrote it can write to this bucket "
            "(see docs/operator.md, Security)"
        )
    return rel


#: The longest file or folder name a Linux file system takes, in bytes (NAME_MAX).
NAME_MAX = 255


def listing_problem(keys: Iterable[str]) -> tuple[str, str] | None:
    """The first of a folder's relative keys (sorted) that cannot become a file beside the others, and why: a segment
    longer than :data:`NAME_MAX` bytes, or a key that is also the folder of another (``x`` and ``x/y``); None when
    every key can."""
    ordered = sorted(keys)
    folders = {rel.rsplit("/", i)[0] for rel in ordered for i in range(1, rel.count("/") + 1)}
    for rel in ordered:
        longest = max(rel.split("/"), key=lambda seg: len(seg.encode()))
        if len(longest.encode()) > NAME_MAX:
            return rel, f"has a segment of {len(longest.encode())} bytes; a file name may have {NAME_MAX}"
        if rel in folders:
            inner = next(k for k in ordered if k.startswith(rel + "/"))
            return rel, f"names a file, and {inner!r} makes it a folder too; both cannot exist on disk"
    return None


def check_keys(rels: Iterable[str], prefix: str) -> None:
    """Every relative key under ``prefix`` can become a file inside the folder it is copied into, beside the others
    (:func:`check_relative_key`, :func:`listing_problem`); :class:`IntegrityError` naming the key otherwise."""
    rels = list(rels)
    for rel in rels:
        check_relative_key(rel, prefix)
    problem = listing_problem(rels)
    if problem is not None:
        key = f"{prefix.rstrip('/')}/{problem[0]}"
        raise IntegrityError(
            f"refusing the object {key!r} under {prefix}: its key {problem[1]}. Nothing was copied. Rename or remove "
            "that object"
        )


def check_file_name(name: object, where: str) -> str:
    """A file name taken from a record (a manifest's shard list): one plain path segment, else IntegrityError."""
    if not isinstance(name, str) or not name or "/" in name or key_problem(name) is not None:
        raise IntegrityError(f"{where}: names the file {name!r}, which is not a plain file name inside its folder")
    return name


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_sha256(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _SHA256.match(value) is not None


def file_table(doc: object, where: str) -> dict[str, str]:
    """A record's ``{relative path: sha256}`` table, checked: a non-empty mapping, every path a relative key that
    stays inside its folder, every digest 64 lowercase hex digits; :class:`IntegrityError` naming ``where`` else."""
    if not isinstance(doc, dict) or not doc:
        raise IntegrityError(f"{where}: has no table of files and checksums; nothing it describes is loaded")
    for rel, digest in doc.items():
        why = key_problem(rel) if isinstance(rel, str) and rel else "is empty or not a string"
        if why is not None:
            raise IntegrityError(f"{where}: lists the file {rel!r}, whose path {why}; nothing it describes is loaded")
        if not is_sha256(digest):
            raise IntegrityError(f"{where}: the checksum of {rel!r} is not a sha256 ({digest!r:.80})")
    return dict(doc)


def mismatches(recorded: Mapping[str, str], found: Mapping[str, str]) -> list[str]:
    """What differs between a recorded ``{path: sha256}`` table and the files found, one phrase each, sorted."""
    out = [f"{p}: missing" for p in sorted(recorded.keys() - found.keys())]
    out += [f"{p}: not in the record" for p in sorted(found.keys() - recorded.keys())]
    out += [
        f"{p}: sha256 {found[p][:16]}…, recorded {recorded[p][:16]}…"
        for p in sorted(recorded.keys() & found.keys())
        if recorded[p] != found[p]
    ]
    return out
