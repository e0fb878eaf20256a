"""URIs the job spec accepts, parsed once, when the spec is parsed, into :class:`Uri` values. Pure: no storage is
touched (a relative local path is made absolute against the working directory).

=================  ==========================================  =====================
form               example                                     where
=================  ==========================================  =====================
local path         ``examples/tiny/model``, ``/data/prefs``    everywhere
``file://``        ``file:///data/prefs.jsonl``                everywhere
``s3://``          ``s3://bucket/prefix``                      everywhere
``hf://``          ``hf://org/name`` (``@revision`` optional)   model and dataset
=================  ==========================================  =====================

Credentials never belong in a URI (``s3://KEY:SECRET@bucket``, ``hf://user:token@org/name``): they would end up
in the job's status, logs and model card. Such a URI is refused, mistyped forms too (``s3:///KEY:SECRET@b``,
``s3:/KEY:SECRET@b``: see :mod:`.userinfo`), and the refusal does not repeat it.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from .rules.schemes import SCHEMES, UriScheme, bucket_problem, hub_problem, split, unsupported
from .rules.userinfo import carries_userinfo


class UriError(ValueError):
    """A URI the spec cannot use; the message says why without naming the field (the caller knows it)."""


@dataclass(frozen=True)
class Uri:
    """Where something lives.

    Attributes:
        scheme: a row of ``rules.schemes.SCHEMES``: ``file`` (a local path), ``s3`` or ``hf``.
        path: the absolute local path, ``bucket/key`` or ``org/name[@revision]``.
        written: the text the spec holds, for messages and for writing the spec back out; empty for a URI
            derived with :meth:`join`. Two URIs naming the same place are equal however they were written.
    """

    scheme: str
    path: str
    written: str = field(default="", compare=False, repr=False)

    @property
    def is_local(self) -> bool:
        """Whether it names a file or folder of this machine (nothing to copy)."""
        return SCHEMES[self.scheme].reach == "filesystem"

    @property
    def is_hub(self) -> bool:
        """Whether the Hub serves it (a model or dataset source, fetched by ``huggingface_hub``)."""
        return SCHEMES[self.scheme].reach == "hub"

    @property
    def as_written(self) -> str:
        """The spec's text for this URI (its canonical form for a derived one)."""
        return self.written or str(self)

    def join(self, *parts: str) -> Uri:
        return Uri(self.scheme, posixpath.join(self.path, *parts))

    def __str__(self) -> str:
        return self.path if self.is_local else f"{self.scheme}://{self.path}"


def parse_uri(value: str, *, allow_hf: bool = False) -> Uri:
    """Parse ``value``; raise :class:`UriError` saying what is wrong. ``allow_hf``: the Hub is a valid source."""
    if carries_userinfo(value):
        raise UriError(
            "credentials must not be written into a URI (user information before '@'); the value is not repeated "
            "here. Give S3 credentials through spec.storage.credentialsSecret (AWS_* variables) and a Hub token "
            "through HF_TOKEN"
        )
    scheme, rest = split(value)
    row = SCHEMES.get(scheme)
    if row is None:
        raise UriError(unsupported(scheme, value, list(SCHEMES.values())))
    if row.reach == "filesystem":
        return Uri(scheme, _local_path(rest, value), value)
    if row.reach == "object-store":
        return Uri(scheme, _bucket_path(row, rest, value), value)
    return Uri(scheme, _hub_path(row, rest, value, allow_hf), value)


def _local_path(rest: str, value: str) -> str:
    if not value:
        raise UriError("must not be empty")
    return str(Path(rest).expanduser().resolve() if "://" not in value else Path(rest).resolve())


def _bucket_path(row: UriScheme, rest: str, value: str) -> str:
    problem = bucket_problem(row.name, rest, value)
    if problem:
        raise UriError(problem)
    path = rest.rstrip("/")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise UriError(
            f"{row.name} URI must not hold '.', '..' or empty segments (object keys are not paths), got {value!r}"
        )
    return path


def _hub_path(row: UriScheme, rest: str, value: str, allow_hf: bool) -> str:
    if not allow_hf:
        raise UriError(f"{row.name}:// is only valid for model and dataset sources, got {value!r}")
    problem = hub_problem(row.name, rest, value)
    if problem:
        raise UriError(problem)
    return rest.rstrip("/")
