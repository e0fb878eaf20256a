"""A keyed work queue (the controller pattern): events mark a job dirty, a fixed pool of workers reconciles
dirty jobs, never the same job twice at once, coalescing bursts of events into one reconcile, and jobs ask to
be looked at again after a delay (deadlines, progress scrapes) or after an error (exponential backoff).

:class:`Runtime` is one controller (the job controller, the sweep controller): a queue, a reconcile, and kopf's
indices of its objects and their children. No kopf here: the glue in :mod:`.handlers` and :mod:`.sweep_handlers`
feeds it keys and hands it kopf's indices as plain mappings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from .core.nodes import NodeView
from .core.pods import PodView

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)
C = TypeVar("C")
Key = tuple[str, str]  # (namespace, name) of a job or a sweep


class WorkQueue(Generic[K]):
    """``add(key)`` schedules ``process(key)``; the coroutine's result (seconds or ``None``) reschedules it."""

    def __init__(
        self,
        process: Callable[[K], Awaitable[float | None]],
        workers: int,
        base_backoff: float = 0.5,
        max_backoff: float = 60.0,
    ) -> None:
        self._process, self._workers = process, workers
        self._base_backoff, self._max_backoff = base_backoff, max_backoff
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._failures: dict[K, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def __len__(self) -> int:
        return len(self._queued)

    @property
    def scheduled(self) -> int:
        return len(self._timers)

    def add(self, key: K, delay: float = 0.0) -> None:
        """Reconcile ``key`` now (or after ``delay`` seconds, unless something earlier is already scheduled)."""
        if delay > 0:
            self._add_later(key, delay)
            return
        if key in self._processing:
            self._dirty.add(key)  # again, right after the current run
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def _add_later(self, key: K, delay: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled():
            if timer.when() <= due:
                return
            timer.cancel()
        self._timers[key] = loop.call_at(due, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def forget(self, key: K) -> None:
        """Drop the key's timer and error history (the object is gone)."""
        timer = self._timers.pop(key, None)
        if timer:
            timer.cancel()
        self._failures.pop(key, None)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(), name=f"prefops-worker-{i}") for i in range(self._workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._processing.add(key)
            delay: float | None
            try:
                delay = await self._process(key)
                self._failures.pop(key, None)
            except Exception as e:
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(self._base_backoff * 2 ** (failures - 1), self._max_backoff)
                log.warning("reconciling %s failed (%s: %s); retrying in %.1fs", key, type(e).__name__, e, delay)
            finally:
                self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)
            if delay is not None:
                self.add(key, delay)


class Nodes(Mapping[str, NodeView]):
    """kopf's index of nodes (name -> the views it holds) as a plain mapping, read where it is asked, never copied."""

    def __init__(self, index: Mapping[str, Iterable[NodeView]]) -> None:
        self.index = index

    def __getitem__(self, name: str) -> NodeView:
        found = next(iter(self.index.get(name, ())), None)
        if found is None:
            raise KeyError(name)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)


class Runtime(Generic[C]):
    """One controller: its work queue wired to its reconcile and to kopf's indices of its objects (jobs, sweeps)
    and of their children (pods, trial jobs), keyed alike. ``reconcile(key, body, children)`` gets the object's
    slim body (``None`` once it is gone) and its children as kopf's watches have delivered them so far."""

    def __init__(
        self,
        reconcile: Callable[[Key, Mapping[str, Any] | None, tuple[C, ...]], Awaitable[float | None]],
        objects: Mapping[Key, Iterable[Mapping[str, Any]]],
        children: Mapping[Key, Iterable[C]],
        workers: int,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.reconcile, self.objects, self.children, self._close = reconcile, objects, children, close
        self.queue: WorkQueue[Key] = WorkQueue(self._process, workers)

    async def _process(self, key: Key) -> float | None:
        body = next(iter(self.objects.get(key, ())), None)
        delay = await self.reconcile(key, body, tuple(self.children.get(key, ())))
        if body is None:
            self.queue.forget(key)
        return delay

    def wake(self, picks: Callable[[C], bool]) -> None:
        """Look again at every object with a child that ``picks`` picks."""
        for key, children in list(self.children.items()):
            if any(picks(c) for c in children):
                self.queue.add(key)

    def start(self) -> None:
        self.queue.start()

    async def stop(self) -> None:
        await self.queue.stop()
        if self._close is not None:
            await self._close()


class NodeChanges:
    """Wakes the jobs with a pod on a node whose health or cordon changed; heartbeats that change neither are
    ignored."""

    def __init__(self, jobs: Runtime[PodView]) -> None:
        self.jobs = jobs
        self._state: dict[str, NodeView] = {}

    def changed(self, view: NodeView | None, name: str) -> None:
        """Node ``name`` is now ``view`` (``None`` once it is deleted)."""
        if view is not None and self._state.get(name) == view:
            return
        if view is None:
            self._state.pop(name, None)
        else:
            self._state[name] = view
        self.jobs.wake(lambda p: p.node == name)
