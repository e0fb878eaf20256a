"""Training curves beside the exported model (``training-curves.png``): loss, reward accuracy and reward margins
per optimizer step, raw and smoothed, in the manner of LLaMA-Factory's ``plot_loss``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

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


def plot_training(history: list[dict[str, Any]], out: Path, title: str) -> Path | None:
    """Draw the curves of ``history`` (TRL log entries) into ``out``; None when there is nothing to draw."""
    series = {
        key: [(h["step"], h[key]) for h in history if isinstance(h.get(key), int | float) and "step" in h]
        for key, _ in PANELS
    }
    if not any(series.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4), dpi=110)
    for ax, (key, label) in zip(axes, PANELS, strict=True):
        points = series[key]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, color="#1f77b4", alpha=0.35, label="per step")
            ax.plot(steps, smooth(list(values)), color="#1f77b4", label="smoothed")
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
