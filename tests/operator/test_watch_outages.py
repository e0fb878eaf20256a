"""A watch answered 404 (a restarted apiserver before it has read the CRDs again) ends as a dropped connection does,
and kopf opens it again: it no longer ends the operator. (The whole path, a real apiserver restarted under a running
job: ``test_faults.py::test_an_apiserver_restart_under_a_running_job_duplicates_no_work``.)"""

from __future__ import annotations

import asyncio

import pytest
from kopf._cogs.clients import watching
from kopf._cogs.clients.errors import APINotFoundError

from prefops_operator import watch_outages


def stream_of(events, end):
    async def stream(**_):
        for e in events:
            yield e
        raise end

    return stream


def drained(stream) -> list:
    async def collect():
        return [e async for e in stream(resource="r")]

    return asyncio.run(collect())


def test_a_404_ends_the_watch_quietly_after_what_it_delivered(monkeypatch):
    monkeypatch.setattr(watch_outages, "_ORIGINAL", stream_of([1, 2], APINotFoundError("404", status=404, headers={})))
    assert drained(watch_outages.continuous_watch) == [1, 2]


def test_other_errors_still_end_the_watch(monkeypatch):
    monkeypatch.setattr(watch_outages, "_ORIGINAL", stream_of([1], RuntimeError("a bug")))
    with pytest.raises(RuntimeError):
        drained(watch_outages.continuous_watch)


def test_install_puts_it_where_kopfs_infinite_watch_finds_it(monkeypatch):
    monkeypatch.setattr(watching, "continuous_watch", watching.continuous_watch)  # restored after the test
    watch_outages.install()
    assert watching.continuous_watch is watch_outages.continuous_watch
