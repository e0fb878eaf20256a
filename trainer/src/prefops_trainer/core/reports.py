"""The shapes of what the phases write for each other and for the model's readers, keyed by their on-disk (camelCase)
names, so every read of a key is checked (mypy) against what is written: the phase reports (``<run>/phases/*.json``,
``attempts/<attempt>/phases/train.json``) and the exported model's manifest ``prefops.json``. Pure: types only.

A report is filled while its phase runs, so its keys are optional to the type (``total=False``) unless every writer
sets them at once; readers of an optional key say what its absence means (``.get``). docs/contract.md §6 lists the
manifest's keys and a test holds the list equal to :class:`Manifest`; another holds what a real run writes to these
types. (No ``from __future__ import annotations`` here: ``NotRequired`` must be seen when the classes are made.)
"""

from typing import Any, NotRequired, TypedDict


class Timing(TypedDict, total=False):
    """When a phase ran (``phases.reports.timed``): ISO 8601 UTC times and the seconds between them."""

    startTime: str
    completionTime: str
    seconds: float


class SplitEntry(TypedDict):
    """One split in a precompute report: its cache key, whether the cache was complete, and, when this shard computed
    its rows, how many and how fast."""

    key: str
    cacheHit: bool
    pairs: NotRequired[int]
    pairsPerSecond: NotRequired[float]


class PrecomputeReport(Timing, total=False):
    """``phases/precompute.json`` (``precompute-<shard>.json`` per worker)."""

    shard: int
    numShards: int
    processes: int  # the worker's processes, each computing a part of its shard
    sharding: str  # how they held the reference model: replicated or zero3 (core.refpass)
    splits: dict[str, SplitEntry]
    cacheHit: bool


class EvalPoint(TypedDict):
    """One evaluation: the optimizer step and the metrics at it (``core.evaluation.Evaluation.to_json``)."""

    step: int
    metrics: dict[str, float]


class EvaluationRecord(EvalPoint):
    """The final evaluation, with the split it ran on."""

    split: str | None


class TrainSummary(Timing, total=False):
    """The train report as the manifest carries it (``phases.train``): all but the histories."""

    worldSize: int
    algorithm: str
    attempt: int
    verifiedRows: int
    tokenizedBy: str  # "precompute": the cache's tokens were trained on; "training": TRL tokenized the splits
    prefixSharing: str
    resumedFrom: str
    steps: int
    metrics: dict[str, float]
    evaluation: EvaluationRecord


class TrainReport(TrainSummary, total=False):
    """``attempts/<attempt>/phases/train.json``: the summary and the histories (every logged step, every evaluation)."""

    logHistory: list[dict[str, Any]]
    evalHistory: list[EvalPoint]


#: The train report's keys the manifest leaves out.
HISTORIES = ("logHistory", "evalHistory")


class ExportReport(Timing):
    """``phases/export.json``."""


class PrecomputeSummary(Timing, total=False):
    """The precompute phase as the manifest carries it: its workers' reports summed up, or ``skipped``."""

    cacheHit: bool
    keys: dict[str, str]
    shards: int
    skipped: bool


class Phases(TypedDict, total=False):
    """``prefops.json``'s ``phases``: each phase's report (precompute summed over its workers)."""

    precompute: PrecomputeSummary
    train: TrainSummary
    export: ExportReport


class GateRecord(TypedDict):
    """A gate that passed (``core.evaluation.Verdict.record``): ``min`` or ``max`` is its bound."""

    metric: str
    value: float | None
    passed: bool
    min: NotRequired[float]
    max: NotRequired[float]


def gate_bound(gate: GateRecord) -> tuple[str, float]:
    """``("min", bound)`` or ``("max", bound)`` of a gate's record."""
    return ("min", gate["min"]) if "min" in gate else ("max", gate["max"])


class Handed(TypedDict, total=False):
    """What the train phase hands to export in its marker (``adapters.trained``), equal to its report's."""

    steps: int
    metrics: dict[str, float]
    evaluation: EvaluationRecord


class FileEntry(TypedDict):
    """A file of the exported model, relative to ``output.uri``."""

    path: str
    size: int
    sha256: str


class JobRef(TypedDict):
    name: str
    uid: str | None


class ModelRef(TypedDict):
    source: str
    dtype: str
    loraMerged: bool


class BaseModelLineage(TypedDict):
    source: str
    revision: str | None
    sha256: dict[str, str]


class SplitLineage(TypedDict):
    split: str | None
    rows: int
    sha256: str


class DataLineage(TypedDict):
    source: str
    splits: dict[str, SplitLineage]


class Lineage(TypedDict):
    """What it takes to reproduce and audit the model (``phases.lineage``)."""

    baseModel: BaseModelLineage
    data: DataLineage
    referenceCache: dict[str, str] | None
    trainerImage: str | None
    versions: dict[str, str | None]
    spec: dict[str, Any]


class Described(TypedDict):
    """What ``prefops.json`` says of the model besides its files, phases and metrics."""

    format: int
    job: JobRef
    model: ModelRef
    algorithm: str
    evaluation: NotRequired[EvaluationRecord]
    gate: NotRequired[GateRecord]
    lineage: Lineage
    prefopsVersion: str


class Manifest(Described):
    """``<output.uri>/prefops.json``, written last: the model is complete."""

    files: list[FileEntry]
    phases: Phases
    metrics: dict[str, float]


def manifest_keys() -> list[str]:
    """The top-level keys of ``prefops.json``, in declaration order (docs/contract.md §6 lists them)."""
    return list(Manifest.__annotations__)
