"""The small reports each phase leaves in ``<run>/phases/`` for the next, and their timing.

``precompute.json`` (or ``precompute-<shard>.json`` per worker), ``train.json`` and ``export.json``; export gathers
them into the model's ``prefops.json``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..adapters import storage
from ..core.workspace import Workspace

Report = dict[str, Any]


def read(ws: Workspace, name: str) -> Report | None:
    found: Report | None = storage.read_json_if_exists(ws.report(name))
    return found


def write(ws: Workspace, name: str, report: Report) -> None:
    storage.write_json(ws.report(name), report)


@contextmanager
def timed(report: Report) -> Iterator[Report]:
    """Fill ``startTime``, ``completionTime`` and ``seconds`` of a phase report around a block."""
    start = started(report)
    yield report
    finished(report, start)


def started(report: Report) -> float:
    """Fill the report's ``startTime``: the phase starts now; returns the time for :func:`finished`."""
    start = time.time()
    report["startTime"] = _iso(start)
    return start


def finished(report: Report, start: float) -> None:
    """Fill ``completionTime`` and ``seconds`` of a report :func:`started` began at ``start``."""
    end = time.time()
    report["completionTime"] = _iso(end)
    report["seconds"] = round(end - start, 3)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def gathered(ws: Workspace, precompute_expected: bool) -> dict[str, Report]:
    """The phase reports so far, for the model's manifest: precompute (its shards summed up) and train."""
    phases: dict[str, Report] = {}
    shards = [n.removesuffix(".json") for n in storage.list_names(ws.phases) if n.startswith("precompute")]
    pre = [storage.read_json(ws.report(n)) for n in shards]
    if pre:
        phases["precompute"] = {
            "startTime": min(p["startTime"] for p in pre),
            "completionTime": max(p["completionTime"] for p in pre),
            "seconds": max(p["seconds"] for p in pre),
            "cacheHit": all(p["cacheHit"] for p in pre),
            "keys": {s: e["key"] for p in pre for s, e in p["splits"].items()},
            "shards": len(pre),
        }
    elif precompute_expected:
        phases["precompute"] = {"skipped": True}
    train = read(ws, "train")
    if train:
        phases["train"] = {k: v for k, v in train.items() if k not in ("logHistory", "evalHistory")}
    return phases
