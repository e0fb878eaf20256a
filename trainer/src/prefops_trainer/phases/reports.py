"""The small reports each phase leaves in ``<run>/phases/`` for the next, and their timing.

``precompute.json`` (or ``precompute-<shard>.json`` per worker), ``train.json`` and ``export.json``; export gathers
them into the model's ``prefops.json``. Their shapes are ``core.reports``'s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from ..adapters import storage
from ..core.reports import HISTORIES, Phases, PrecomputeReport, PrecomputeSummary, Timing, TrainReport, TrainSummary
from ..core.workspace import Workspace

R = TypeVar("R", bound=Timing)


def _read(ws: Workspace, name: str) -> Any:
    return storage.read_json_if_exists(ws.report(name))


def read_train(ws: Workspace) -> TrainReport | None:
    """Attempt ``ws.attempt``'s train report, or None when the phase has not finished."""
    found: TrainReport | None = _read(ws, "train")
    return found


def precompute_name(shard: int, num_shards: int) -> str:
    """The report of precompute worker ``shard`` of ``num_shards``."""
    return "precompute" if num_shards == 1 else f"precompute-{shard:05d}"


def read_precompute(ws: Workspace, shard: int, num_shards: int) -> PrecomputeReport | None:
    """Worker ``shard``'s precompute report, or None when it has not finished."""
    found: PrecomputeReport | None = _read(ws, precompute_name(shard, num_shards))
    return found


def write(ws: Workspace, name: str, report: Timing) -> None:
    storage.write_json(ws.report(name), report)


@contextmanager
def timed(report: R) -> Iterator[R]:
    """Fill ``startTime``, ``completionTime`` and ``seconds`` of a phase report around a block."""
    start = started(report)
    yield report
    finished(report, start)


def started(report: Timing) -> float:
    """Fill the report's ``startTime``: the phase starts now; returns the time for :func:`finished`."""
    start = time.time()
    report["startTime"] = _iso(start)
    return start


def finished(report: Timing, start: float) -> None:
    """Fill ``completionTime`` and ``seconds`` of a report :func:`started` began at ``start``."""
    end = time.time()
    report["completionTime"] = _iso(end)
    report["seconds"] = round(end - start, 3)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _precompute_reports(ws: Workspace) -> list[PrecomputeReport]:
    shards = [n.removesuffix(".json") for n in storage.list_names(ws.phases) if n.startswith("precompute")]
    return [storage.read_json(ws.report(n)) for n in shards]


def _summed(pre: list[PrecomputeReport]) -> PrecomputeSummary:
    """The workers' precompute reports as one."""
    return {
        "startTime": min(p["startTime"] for p in pre),
        "completionTime": max(p["completionTime"] for p in pre),
        "seconds": max(p["seconds"] for p in pre),
        "cacheHit": all(p["cacheHit"] for p in pre),
        "keys": {s: e["key"] for p in pre for s, e in p["splits"].items()},
        "shards": len(pre),
    }


def summary(train: TrainReport) -> TrainSummary:
    """The train report without its histories, as the manifest carries it."""
    return cast(TrainSummary, {k: v for k, v in train.items() if k not in HISTORIES})


def gathered(ws: Workspace, precompute_expected: bool) -> Phases:
    """The phase reports so far, for the model's manifest: precompute (its shards summed up) and train."""
    phases: Phases = {}
    pre = _precompute_reports(ws)
    if pre:
        phases["precompute"] = _summed(pre)
    elif precompute_expected:
        phases["precompute"] = {"skipped": True}
    train = read_train(ws)
    if train:
        phases["train"] = summary(train)
    return phases
