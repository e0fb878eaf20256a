"""What a reconciler remembers of one object between reconciles: its uid, and the status it wrote last, so a watch
event that predates that write is not mistaken for the truth. Pure: the caller passes the monotonic clock."""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

STALE_GRACE = 5.0  # seconds to wait for the watch to deliver our own status write


@dataclass
class WrittenStatus:
    """The base of a reconciler's memory of one object (jobs and sweeps extend it with their own fields)."""

    uid: str
    written: dict[str, Any] | None = None
    written_at: float = 0.0

    def wrote(self, status: dict[str, Any], now: float) -> None:
        self.written, self.written_at = status, now

    def stale(self, body: Mapping[str, Any], now: float) -> bool:
        """Whether ``body`` predates our last status write (the watch has not delivered it yet); once it has, or
        after :data:`STALE_GRACE`, the write is forgotten."""
        if self.written is None:
            return False
        if body.get("status") == self.written or now - self.written_at > STALE_GRACE:
            self.written = None
            return False
        return True


M = TypeVar("M", bound=WrittenStatus)


def remember(memory: MutableMapping[Any, M], key: Any, body: Mapping[str, Any], make: Callable[[str], M]) -> M:
    """The memory of the object at ``key``; a fresh one when none is kept or the object is a new one under an old
    name (another uid)."""
    uid = str(body["metadata"].get("uid"))
    mem = memory.get(key)
    if mem is None or mem.uid != uid:
        mem = memory[key] = make(uid)
    return mem
