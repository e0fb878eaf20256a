"""Evaluation results and the quality gate, as the trainer reports them (docs/contract.md §7 and §8). Pure.

- While training, rank 0 serves the latest evaluation as ``prefops_trainer_eval_<metric>`` gauges beside
  ``prefops_trainer_eval_step``; the operator reads them with its progress scrape (:func:`evaluation_from_metrics`).
- When the training group succeeds, replica 0's termination message holds the final evaluation
  (:func:`final_evaluation`), which replaces whatever was scraped.
- An export pod that refuses to publish because ``spec.output.gate`` is not met exits with
  :data:`GATE_NOT_MET_EXIT_CODE` and describes the verdict in its termination message (:func:`gate_message`).

Everything read here comes from a pod, so it is checked, not trusted: unknown metric names, non-numbers and
non-finite values are dropped, and a message that is not the documented JSON is shown as text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .spec import Gate

GAUGE_PREFIX = "prefops_trainer_eval_"
#: The optimizer step the served evaluation belongs to.
STEP_GAUGE = "prefops_trainer_eval_step"
#: The trainer's exit code for "the model does not pass spec.output.gate" (docs/contract.md §4).
GATE_NOT_MET_EXIT_CODE = 3

Sample = tuple[str, Mapping[str, str], float]


def gauge_name(metric: str) -> str:
    """The trainer's gauge of one evaluation metric, e.g. ``rewards/accuracies`` →
    ``prefops_trainer_eval_rewards_accuracies``: every character a Prometheus name cannot hold becomes ``_``."""
    return GAUGE_PREFIX + re.sub(r"[^a-zA-Z0-9_]", "_", metric)


@dataclass(frozen=True)
class Evaluation:
    """The latest evaluation on ``spec.dataset.evalSplit``: metric name (TRL's, without ``eval_``) → value.

    ``final`` marks the evaluation at the end of training, reported by the training group as it finished; a
    scraped one is replaced by newer scrapes, a final one by nothing.
    """

    step: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    final: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "metrics": dict(sorted(self.metrics.items())), "final": self.final}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Evaluation | None:
        step = d.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            return None
        return cls(step, _numbers(d.get("metrics"), None), d.get("final") is True)

    def newer_than(self, other: Evaluation | None) -> bool:
        """Whether this evaluation should replace ``other`` in the status."""
        if other is None:
            return True
        if other.final:
            return self.final and self != other
        return self.final or (self.step, dict(self.metrics)) != (other.step, dict(other.metrics))


def evaluation_from_metrics(samples: Iterable[Sample], names: Iterable[str]) -> Evaluation | None:
    """The evaluation a training pod serves: ``None`` until it has evaluated (no ``prefops_trainer_eval_step``)."""
    by_gauge = {gauge_name(n): n for n in names}
    step: int | None = None
    metrics: dict[str, float] = {}
    for name, labels, value in samples:
        if labels.get("phase", "train") != "train" or not math.isfinite(value):
            continue
        if name == STEP_GAUGE:
            step = int(value)
        elif name in by_gauge:
            metrics[by_gauge[name]] = round(value, 6)
    if step is None or not metrics:
        return None
    return Evaluation(step, metrics)


def final_evaluation(message: str | None, names: Iterable[str]) -> Evaluation | None:
    """The final evaluation in a training pod's termination message ``{"evaluation": {"step": N, "metrics": {...}}}``;
    ``None`` when the message has none (no evalSplit, or not the documented JSON)."""
    doc = _json(message).get("evaluation")
    if not isinstance(doc, Mapping):
        return None
    step = doc.get("step")
    if isinstance(step, bool) or not isinstance(step, int):
        return None
    metrics = _numbers(doc.get("metrics"), set(names))
    return Evaluation(step, metrics, final=True) if metrics else None


def gate_message(message: str | None, gate: Gate | None, output_uri: str) -> str:
    """The ``GateNotMet`` condition message from an export pod's termination message
    ``{"gate": {"metric", "value", "min" | "max", "step", "trained"}}``: names the metric, its value and the bound."""
    doc = _json(message).get("gate")
    if not isinstance(doc, Mapping):
        return f"spec.output.gate is not met: {(message or 'no details from the trainer').strip()[:1000]}"
    metric = str(doc.get("metric") or (gate.metric if gate else "?"))[:100]
    kind = "min" if "min" in doc else "max"
    bound, value, step = _number(doc.get(kind)), _number(doc.get("value")), doc.get("step")
    side = "below the minimum" if kind == "min" else "above the maximum"
    limit = f"{side} {bound:g}" if bound is not None else side
    shown = "was not reported by the final evaluation" if value is None else f"is {value:g}, {limit}"
    at = f" at step {step}" if isinstance(step, int) and not isinstance(step, bool) else ""
    text = f"spec.output.gate is not met: eval {metric}{at} {shown} (output.gate.{kind}); the model was not written"
    text += f" to {output_uri}"
    trained = doc.get("trained")
    if isinstance(trained, str) and trained:
        text += f"; the trained weights stay in {trained[:500]}"
    return text


def _json(message: str | None) -> Mapping[str, Any]:
    try:
        doc: Any = json.loads(message or "")
    except ValueError:
        return {}
    return doc if isinstance(doc, Mapping) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _numbers(values: Any, allowed: set[str] | None) -> dict[str, float]:
    """The finite numbers of a ``name → value`` mapping, restricted to ``allowed`` names when given."""
    if not isinstance(values, Mapping):
        return {}
    out = {}
    for name, value in values.items():
        number = _number(value)
        if isinstance(name, str) and number is not None and (allowed is None or name in allowed):
            out[name] = round(number, 6)
    return out
