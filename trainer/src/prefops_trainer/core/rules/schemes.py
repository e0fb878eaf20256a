"""The URI schemes a job spec may name, in one table: how each is reached, what it may hold, and how its path must
look. Pure and standard-library only: the operator holds a generated copy (``scripts/gen_shared_copies.py``), so the
trainer's parsing (``core.uris``) and the operator's admission checks ask the same rows.

How a scheme is reached decides who serves it: ``filesystem`` and ``object-store`` schemes are storage, served by one
``prefops_trainer.adapters.stores`` implementation each; ``hub`` (the Hugging Face Hub) is only ever a model or
dataset source, fetched by ``huggingface_hub``. Adding a storage scheme (say ``gs``) is a row here and a store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Reach = Literal["filesystem", "object-store", "hub"]


@dataclass(frozen=True)
class UriScheme:
    """One scheme.

    Attributes:
        name: what precedes ``://`` (``file`` also stands for a plain path).
        reach: ``filesystem`` (this machine's files), ``object-store`` (``<bucket>/<key>``, the same for every pod of
            a cluster) or ``hub`` (``<org>/<name>[@revision]``, read-only).
        form: how a URI of it is written, for messages.
    """

    name: str
    reach: Reach
    form: str

    @property
    def storage(self) -> bool:
        """Whether it may hold work storage and output (``spec.storage.uri``, ``spec.output.uri``)."""
        return self.reach != "hub"

    @property
    def shared(self) -> bool:
        """Whether every pod of a cluster sees the same objects there: work storage and output on a cluster must."""
        return self.reach == "object-store"


SCHEMES: dict[str, UriScheme] = {
    row.name: row
    for row in (
        UriScheme("file", "filesystem", "file://"),
        UriScheme("s3", "object-store", "s3://bucket/prefix"),
        UriScheme("hf", "hub", "hf://org/name"),
    )
}

#: A value without ``://`` is a path on this machine.
PATH_SCHEME = "file"


def split(value: str) -> tuple[str, str]:
    """``(scheme, rest)`` of ``value``; a plain path is ``(PATH_SCHEME, value)``. The scheme may be unknown."""
    scheme, sep, rest = value.partition("://")
    return (scheme, rest) if sep else (PATH_SCHEME, value)


def named(reach: Reach) -> list[UriScheme]:
    """The schemes reached so, in table order."""
    return [row for row in SCHEMES.values() if row.reach == reach]


def bucket_problem(scheme: str, rest: str, value: str) -> str | None:
    """Why the object-store URI ``value`` (``rest`` after ``scheme://``) names no bucket; None when it does."""
    if not rest or rest.startswith("/"):
        return f"{scheme} URI needs a bucket, got {value!r}"
    return None


def hub_problem(scheme: str, rest: str, value: str) -> str | None:
    """Why the hub URI ``value`` names no ``org/name``; None when it does."""
    if rest.count("/") < 1:
        return f"{scheme} URI must look like {SCHEMES[scheme].form}, got {value!r}"
    return None


def unsupported(scheme: str, value: str, rows: list[UriScheme]) -> str:
    """The message for a scheme the field does not take; ``rows`` are those it takes."""
    written = ["a local path", *(f"{row.name}://" for row in rows)]
    return f"unsupported URI scheme {scheme!r} in {value!r}; use {', '.join(written[:-1])} or {written[-1]}"
