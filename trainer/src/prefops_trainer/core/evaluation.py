"""Evaluation results and the quality gate's verdict (docs/contract.md §7 and §8). Pure.

TRL logs an evaluation as ``eval_<metric>`` keys beside the step; :func:`from_trl` keeps the algorithm's metrics
(``Algorithm.eval_metrics``) as finite numbers under their own names, and :func:`history` reads every evaluation of a
trainer's log history. :func:`judge` compares the final evaluation with ``spec.output.gate``: ``value >= min`` or
``value <= max`` passes; a metric the evaluation lacks fails (value ``None``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .reports import EvalPoint, GateRecord
from .spec import GateSpec

#: TRL's prefix of evaluation keys.
PREFIX = "eval_"


@dataclass(frozen=True)
class Evaluation:
    """One evaluation on ``spec.dataset.evalSplit``: the optimizer step it belongs to and metric → value."""

    step: int
    metrics: Mapping[str, float]

    def to_json(self) -> EvalPoint:
        return {"step": self.step, "metrics": dict(self.metrics)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Evaluation:
        return cls(int(doc["step"]), {str(k): float(v) for k, v in doc["metrics"].items()})


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def from_trl(logged: Mapping[str, Any], names: Iterable[str]) -> dict[str, float]:
    """The metrics ``names`` among TRL's logged evaluation (``eval_<name>``), finite numbers only, in ``names``'
    order; a metric TRL did not log (or logged as NaN) is absent."""
    out = {}
    for name in names:
        value = _number(logged.get(PREFIX + name))
        if value is not None:
            out[name] = value
    return out


def history(log_history: Iterable[Mapping[str, Any]], names: Iterable[str]) -> list[Evaluation]:
    """Every evaluation in a trainer's ``state.log_history``, in order (entries with ``eval_`` keys and a step)."""
    names = tuple(names)
    found = []
    for entry in log_history:
        metrics = from_trl(entry, names)
        step = entry.get("step")
        if metrics and isinstance(step, int):
            found.append(Evaluation(step, metrics))
    return found


@dataclass(frozen=True)
class GateVerdict:
    """The gate compared with the final evaluation.

    Attributes:
        metric: the gate's metric.
        kind: ``min`` (the value must be at least ``bound``) or ``max`` (at most).
        bound: the gate's bound.
        value: the final evaluation's value of ``metric``; None when it did not report it.
        step: the step of the final evaluation; None when there was none.
    """

    metric: str
    kind: Literal["min", "max"]
    bound: float
    value: float | None
    step: int | None

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.bound if self.kind == "min" else self.value <= self.bound

    def record(self) -> GateRecord:
        """What ``prefops.json`` records of a gate that passed."""
        found: GateRecord = {"metric": self.metric, "value": self.value, "passed": self.passed}
        if self.kind == "min":
            found["min"] = self.bound
        else:
            found["max"] = self.bound
        return found

    def termination(self, trained: str) -> dict[str, Any]:
        """The export pod's termination message of a gate not met: ``{"gate": {...}}`` (docs/contract.md §8)."""
        doc = {"metric": self.metric, "value": self.value, self.kind: self.bound, "step": self.step, "trained": trained}
        return {"gate": doc}

    def explanation(self, output: str, trained: str) -> str:
        """One paragraph: what was measured, the bound it missed, what was (not) written, where the weights are."""
        limit = f"the minimum {self.bound:g}" if self.kind == "min" else f"the maximum {self.bound:g}"
        at = f" at step {self.step}" if self.step is not None else ""
        if self.value is None:
            measured = f"eval {self.metric} was not reported by the final evaluation{at}, so it cannot meet {limit}"
        else:
            side = "below" if self.kind == "min" else "above"
            measured = f"eval {self.metric}{at} is {self.value:g}, {side} {limit}"
        return (
            f"spec.output.gate is not met: {measured} (output.gate.{self.kind}); the model was not written to "
            f"{output}; the trained weights stay in {trained}. To publish them, change or remove spec.output.gate and "
            "run the export phase again (the trained weights are reused)."
        )


def judge(gate: GateSpec, final: Evaluation | None) -> GateVerdict:
    """The verdict of ``gate`` on the final evaluation (None: training reported none)."""
    kind, bound = gate.bound
    value = final.metrics.get(gate.metric) if final is not None else None
    return GateVerdict(gate.metric, kind, bound, value, final.step if final is not None else None)
