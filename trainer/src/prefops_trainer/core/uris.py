"""URIs the job spec accepts, parsed without touching any storage. Pure.

=================  ==========================================  =====================
form               example                                     where
=================  ==========================================  =====================
local path         ``examples/tiny/model``, ``/data/prefs``    everywhere
``file://``        ``file:///data/prefs.jsonl``                everywhere
``s3://``          ``s3://bucket/prefix``                      everywhere
``hf://``          ``hf://org/name`` (``@revision`` optional)   model and dataset
=================  ==========================================  =====================
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

from .errors import SpecError

SCHEMES = ("file", "s3", "hf")


@dataclass(frozen=True)
class Uri:
    scheme: str  # "file", "s3" or "hf"
    path: str  # absolute local path, "bucket/key", or "org/name"

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    def join(self, *parts: str) -> Uri:
        return Uri(self.scheme, posixpath.join(self.path, *parts))

    def __str__(self) -> str:
        return self.path if self.is_local else f"{self.scheme}://{self.path}"


def parse_uri(value: str, field: str, allow_hf: bool = False) -> Uri:
    """Parse ``value`` (from spec field ``field``); relative local paths resolve against the working directory."""
    if "://" not in value:
        return Uri("file", str(Path(value).expanduser().resolve()))
    scheme, _, rest = value.partition("://")
    if scheme == "file":
        return Uri("file", str(Path(rest).resolve()))
    if scheme == "s3":
        if not rest or rest.startswith("/"):
            raise SpecError(f"{field}: s3 URI needs a bucket, got {value!r}")
        return Uri("s3", rest.rstrip("/"))
    if scheme == "hf":
        if not allow_hf:
            raise SpecError(f"{field}: hf:// is only valid for model and dataset sources, got {value!r}")
        if rest.count("/") < 1:
            raise SpecError(f"{field}: hf URI must look like hf://org/name, got {value!r}")
        return Uri("hf", rest.rstrip("/"))
    raise SpecError(
        f"{field}: unsupported URI scheme {scheme!r} in {value!r}; use a local path, file://, s3:// or hf://"
    )
