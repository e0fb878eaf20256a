"""Progress from the trainer's Prometheus endpoint (docs/contract.md §5): parse the text exposition format and
map the ``prefops_trainer_*`` gauges onto ``status.progress``. Pure."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime

from .status import Progress

#: status.progress field -> trainer metric
TRAINING_METRICS = {
    "step": "prefops_trainer_step",
    "total_steps": "prefops_trainer_total_steps",
    "epoch": "prefops_trainer_epoch",
    "loss": "prefops_trainer_loss",
    "reward_accuracy": "prefops_trainer_reward_accuracy",
}
PRECOMPUTE_METRICS = {
    "pairs_done": "prefops_trainer_precompute_pairs_done",
    "pairs_total": "prefops_trainer_precompute_pairs_total",
}
_INT_FIELDS = {"step", "total_steps", "pairs_done", "pairs_total"}
_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Sample = tuple[str, Mapping[str, str], float]


def parse_exposition(text: str) -> list[Sample]:
    """(name, labels, value) of every sample in a Prometheus text exposition; comments and junk are skipped."""
    samples: list[Sample] = []
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        try:
            value = float(m.group("value"))
        except ValueError:
            continue
        labels = dict(_LABEL.findall(m.group("labels") or ""))
        samples.append((m.group("name"), labels, value))
    return samples


def _value(samples: Iterable[Sample], metric: str, phase: str) -> float | None:
    """The metric's value, preferring the series labelled with the running ``phase``."""
    values = [(labels.get("phase") == phase, v) for name, labels, v in samples if name == metric and math.isfinite(v)]
    if not values:
        return None
    return sorted(values, key=lambda pair: pair[0])[-1][1]


def training_progress(samples: Iterable[Sample], now: datetime) -> Progress | None:
    """Progress of a training (or export) pod from its rank-0 metrics; ``None`` when it has none yet."""
    samples = list(samples)
    fields = {f: _value(samples, metric, "train") for f, metric in TRAINING_METRICS.items()}
    return _progress(fields, now)


def shard_counts(samples: Iterable[Sample]) -> dict[str, float]:
    """A precompute shard's pairs done and total (those it reports), from its metrics: the numbers the operator
    keeps between scrapes, never the text."""
    samples = list(samples)
    found = {f: _value(samples, metric, "precompute") for f, metric in PRECOMPUTE_METRICS.items()}
    return {f: v for f, v in found.items() if v is not None}


def precompute_progress(shards: Iterable[Mapping[str, float]], now: datetime) -> Progress | None:
    """Pairs done / total summed over the precompute shards' :func:`shard_counts`."""
    fields: dict[str, float | None] = dict.fromkeys(PRECOMPUTE_METRICS)
    for counts in shards:
        for f, value in counts.items():
            fields[f] = (fields[f] or 0.0) + value
    return _progress(fields, now)


def _progress(fields: Mapping[str, float | None], now: datetime) -> Progress | None:
    known = {f: (int(v) if f in _INT_FIELDS else round(v, 6)) for f, v in fields.items() if v is not None}
    if not known:
        return None
    return Progress(last_scrape_time=now, **known)  # type: ignore[arg-type]
