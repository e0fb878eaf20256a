"""The keyed work queue: one reconcile per key at a time, bursts coalesced, delayed and backed-off retries.

Every scenario runs on a virtual clock (support.clock): sleeps and timers take no real time, and the times the
queue calls back at are exact."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from support.clock import run_virtual

from prefops_operator.runtime import WorkQueue


def now() -> float:
    return asyncio.get_running_loop().time()


def test_a_burst_of_events_for_one_key_is_coalesced_and_never_processed_concurrently():
    async def scenario():
        active, calls, peak = set(), [], [0]

        async def process(key):
            assert key not in active
            active.add(key)
            peak[0] = max(peak[0], len(active))
            calls.append(key)
            await asyncio.sleep(0.05)
            active.discard(key)

        q = WorkQueue(process, workers=4)
        q.start()
        for _ in range(50):
            q.add("a")
        await asyncio.sleep(0.01)
        for _ in range(50):
            q.add("a")  # while "a" is being processed: one more run afterwards, not fifty
        q.add("b")
        await asyncio.sleep(0.3)
        await q.stop()
        return calls, peak[0]

    calls, peak = run_virtual(scenario())
    assert calls.count("a") == 2
    assert calls.count("b") == 1
    assert peak == 2  # a and b in parallel, never a twice


def test_a_returned_delay_schedules_the_key_again_and_an_earlier_request_wins():
    async def scenario():
        calls = []

        async def process(key):
            calls.append(now())
            return 0.2 if len(calls) == 1 else None

        q = WorkQueue(process, workers=1)
        q.start()
        q.add("k")
        await asyncio.sleep(0.05)
        q.add("k", delay=5.0)  # later than the pending 0.2 s: dropped
        await asyncio.sleep(60)
        await q.stop()
        return calls

    calls = run_virtual(scenario())
    assert calls == [0.0, pytest.approx(0.2)]


def test_a_later_request_replaces_nothing_but_an_earlier_one_moves_the_timer_forward():
    async def scenario():
        calls = []

        async def process(key):
            calls.append(now())

        q = WorkQueue(process, workers=1)
        q.start()
        q.add("k", delay=10.0)
        q.add("k", delay=3.0)
        await asyncio.sleep(60)
        await q.stop()
        return calls

    assert run_virtual(scenario()) == [pytest.approx(3.0)]


def test_failures_are_retried_with_exponential_backoff_up_to_the_maximum():
    async def scenario():
        calls = []

        async def process(key):
            calls.append(now())
            if len(calls) <= 7:
                raise RuntimeError("apiserver hiccup")

        q = WorkQueue(process, workers=1, base_backoff=0.05, max_backoff=1.0)
        q.start()
        q.add("k")
        await asyncio.sleep(60)  # after the success nothing is scheduled any more
        await q.stop()
        return calls

    calls = run_virtual(scenario())
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_forgetting_a_key_cancels_its_timer():
    async def scenario():
        calls = []

        async def process(key):
            calls.append(now())

        q = WorkQueue(process, workers=1)
        q.start()
        q.add("gone", delay=1.0)
        q.forget("gone")
        await asyncio.sleep(60)
        await q.stop()
        return calls, q.scheduled

    assert run_virtual(scenario()) == ([], 0)
