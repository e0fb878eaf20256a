"""The operator outlives an apiserver restart: kopf ends its operator when a watch gets a 404, which a restarted
apiserver answers on custom resources until it has read their CRDs again. ``__main__`` then starts the controllers
again, for a bounded time. (The whole path, with a real apiserver restarted under a running job:
``test_faults.py::test_an_apiserver_restart_under_a_running_job_duplicates_no_work``.)"""

from __future__ import annotations

import pytest
from kopf._cogs.clients.errors import APINotFoundError

from prefops_operator.__main__ import run_through_restarts


def not_found() -> APINotFoundError:
    return APINotFoundError("404 page not found", status=404, headers={})


def test_the_controllers_start_again_after_a_404_and_the_operator_runs_on():
    ends = [not_found(), not_found()]
    calls = []

    def run():
        calls.append(1)
        if ends:
            raise ends.pop()

    run_through_restarts(run, patience=5, pause=0)
    assert len(calls) == 3


def test_404s_without_a_break_for_longer_than_the_patience_end_the_operator():
    calls = []

    def run():
        calls.append(1)
        raise not_found()

    with pytest.raises(APINotFoundError):
        run_through_restarts(run, patience=0.05, pause=0.01)
    assert len(calls) > 1, "it tried again before it gave up"


def test_other_errors_end_the_operator_at_once():
    calls = []

    def run():
        calls.append(1)
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        run_through_restarts(run, patience=5, pause=0)
    assert len(calls) == 1
