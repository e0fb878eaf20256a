"""The keyed work queue: one reconcile per key at a time, bursts coalesced, delayed and backed-off retries."""

from __future__ import annotations

import asyncio

from prefops_operator.runtime import WorkQueue


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


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

    calls, peak = run(scenario())
    assert calls.count("a") == 2
    assert calls.count("b") == 1
    assert peak == 2  # a and b in parallel, never a twice


def test_a_returned_delay_schedules_the_key_again_and_an_earlier_request_wins():
    async def scenario():
        calls = []

        async def process(key):
            calls.append(asyncio.get_running_loop().time())
            return 0.2 if len(calls) == 1 else None

        q = WorkQueue(process, workers=1)
        q.start()
        q.add("k")
        await asyncio.sleep(0.05)
        q.add("k", delay=5.0)  # later than the pending 0.2 s: ignored
        await asyncio.sleep(0.4)
        await q.stop()
        return calls

    calls = run(scenario())
    assert len(calls) == 2
    assert 0.15 <= calls[1] - calls[0] < 1.0


def test_failures_are_retried_with_growing_backoff():
    async def scenario():
        calls = []

        async def process(key):
            calls.append(asyncio.get_running_loop().time())
            if len(calls) < 3:
                raise RuntimeError("apiserver hiccup")

        q = WorkQueue(process, workers=1, base_backoff=0.05, max_backoff=1.0)
        q.start()
        q.add("k")
        while len(calls) < 3:
            await asyncio.sleep(0.02)
        await q.stop()
        return calls

    calls = run(scenario())
    assert calls[2] - calls[1] > calls[1] - calls[0] >= 0.04
