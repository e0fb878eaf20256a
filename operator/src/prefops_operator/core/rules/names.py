# Generated from trainer/src/prefops_trainer/core/rules/names.py
# by scripts/gen_shared_copies.py (a test checks it is current): do not edit.
"""Names of owned objects (a job's pods, a sweep's trial jobs): DNS-1035 labels of at most 63 characters, derived
from the owner's name so that creating one twice is a conflict, never a duplicate."""

from __future__ import annotations

import hashlib

MAX_NAME = 63


def child_name(owner: str, *parts: str) -> str:
    """``<owner>-<part>-<part>``, at most 63 characters, unique per (owner, parts): a name that would be longer keeps
    a readable prefix of ``owner`` and 8 hex digits of its sha256."""
    suffix = "-".join(parts)
    name = f"{owner}-{suffix}" if suffix else owner
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(owner.encode()).hexdigest()[:8]
    room = MAX_NAME - len(suffix) - len(digest) - 2
    if room < 1:
        raise ValueError(f"child name suffix {suffix!r} is too long")
    prefix = owner[:room].rstrip("-")
    return f"{prefix}-{digest}-{suffix}"
