"""A controllable clock for asyncio code (the idea of kopf's ``looptime``): an event loop whose ``time()`` is
virtual. When nothing is ready, the loop does not wait for the next timer; it moves its clock to it. So
``asyncio.sleep(60)``, ``call_at`` and timeouts take no real time, and a test can assert exact durations on the
loop's clock without depending on how busy the machine is.

    run_virtual(scenario())            # run a coroutine on a fresh virtual-time loop, starting at t = 0

For code that reads a wall clock instead (the operator's reconciler takes ``clock``), :class:`ManualClock` is a
datetime that moves only when the test says.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

T = TypeVar("T")


class _Selector(selectors.DefaultSelector):
    """Polls instead of blocking, and advances the loop's clock by the timeout it was asked to wait."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:  # nothing scheduled: only real I/O (another thread's wakeup) can make progress
            return super().select(None)
        ready = super().select(0)
        if not ready:
            self._loop.now += max(timeout, 0.0)
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time, starting at 0."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_Selector(self))

    def time(self) -> float:
        return self.now


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a new :class:`VirtualTimeLoop`."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


class ManualClock:
    """A wall clock that moves only when told: ``clock()`` is now (a UTC datetime with whole seconds, as the API
    stores them), ``clock.advance(20)`` moves it. The operator's reconciler takes it as its ``clock`` so that a test
    reaches a deadline exactly, against a real apiserver, without waiting for it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = (start or datetime.now(UTC)).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def stamp(self, offset: float = 0) -> str:
        """The clock's time (plus ``offset`` seconds) as the API writes timestamps."""
        return (self.now + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%SZ")
