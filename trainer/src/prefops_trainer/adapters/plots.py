"""Training curves beside the exported model (``training-curves.png``): loss, reward accuracy and reward margins
per optimizer step, raw and smoothed, in the manner of LLaMA-Factory's ``plot_loss``, with the evaluations on
``spec.dataset.evalSplit`` as markers; and a local sweep's comparison (``sweep.png``): the objective per trial and
the trials' evaluation curves overlaid."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..core.reports import EvalPoint

PANELS = (("loss", "loss"), ("rewards/accuracies", "reward accuracy"), ("rewards/margins", "reward margin"))


def smooth(values: list[float], weight: float | None = None) -> list[float]:
    """Exponential moving average; the weight grows with the series length (as LLaMA-Factory's). Pure."""
    if not values:
        return []
    if weight is None:
        weight = 1.8 * (1 / (1 + math.exp(-0.05 * len(values))) - 0.5)
    out, last = [], values[0]
    for v in values:
        last = last * weight + (1 - weight) * v
        out.append(last)
    return out


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _eval_series(evaluations: list[EvalPoint], key: str) -> list[tuple[int, float]]:
    """(step, value) of ``key`` in each evaluation (``{"step", "metrics"}``) that reported it."""
    return [(e["step"], e["metrics"][key]) for e in evaluations if key in e["metrics"]]


def plot_training(
    history: list[dict[str, Any]], out: Path, title: str, evaluations: list[EvalPoint] | None = None
) -> Path | None:
    """Draw the curves of ``history`` (TRL log entries) and ``evaluations`` (``{"step", "metrics"}``) into ``out``;
    None when there is nothing to draw."""
    series = {
        key: [(h["step"], h[key]) for h in history if isinstance(h.get(key), int | float) and "step" in h]
        for key, _ in PANELS
    }
    if not any(series.values()):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4), dpi=110)
    for ax, (key, label) in zip(axes, PANELS, strict=True):
        points = series[key]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, color="#1f77b4", alpha=0.35, label="per step")
            ax.plot(steps, smooth(list(values)), color="#1f77b4", label="smoothed")
        evaluated = _eval_series(evaluations or [], key)
        if evaluated:
            steps, values = zip(*evaluated, strict=True)
            ax.plot(steps, values, color="#d62728", marker="o", label="eval")
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_sweep(trials: list[dict[str, Any]], metric: str, goal: str, out: Path, title: str) -> Path:
    """``sweep.png``: the objective of each trial (``{"name", "objective", "best", "evaluations"}``) as bars, the best
    one highlighted, and each trial's evaluation curve of ``metric`` overlaid."""
    plt = _pyplot()
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(10.5, 3.6), dpi=110)
    colors = [plt.cm.tab10(i % 10) for i in range(len(trials))]
    for i, t in enumerate(trials):
        value = t["objective"]
        bars.bar(i, value or 0.0, color=colors[i], edgecolor="black", linewidth=2.0 if t["best"] else 0.0)
        label = "none" if value is None else f"{value:.4g}" + (" (best)" if t["best"] else "")
        bars.annotate(label, (i, value or 0.0), ha="center", va="bottom", fontsize=8)
        points = _eval_series(t["evaluations"], metric)
        if points:
            steps, ys = zip(*points, strict=True)
            curves.plot(steps, ys, marker="o", color=colors[i], label=t["name"], linewidth=2.5 if t["best"] else 1.2)
    bars.set_xticks(range(len(trials)), [t["name"] for t in trials], rotation=20, ha="right", fontsize=8)
    bars.set_title(f"final eval {metric} per trial ({goal})")
    bars.grid(axis="y", alpha=0.3)
    curves.set_title(f"eval {metric} while training")
    curves.set_xlabel("step")
    curves.grid(alpha=0.3)
    if any(t["evaluations"] for t in trials):
        curves.legend(loc="best", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
