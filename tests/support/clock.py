"""A controllable clock for asyncio code (the idea of kopf's ``looptime``): an event loop whose ``time()`` is
virtual. When nothing is ready, the loop does not wait for the next timer; it moves its clock to it. So
``asyncio.sleep(60)``, ``call_at`` and timeouts take no real time, and a test can assert exact durations on the
loop's clock without depending on how busy the machine is.

    run_virtual(scenario())            # run a coroutine on a fresh virtual-time loop, starting at t = 0
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
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
