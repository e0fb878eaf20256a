"""The training history condensed: final metrics for the report and the model card, one log line per step. Pure."""

from __future__ import annotations

from typing import Any

#: The values a step's log line and the last-epoch means show.
HEADLINE = ("loss", "rewards/accuracies", "rewards/margins")


def summarize(log_history: list[dict[str, Any]], steps_per_epoch: int) -> dict[str, float]:
    """Final metrics: the last logged value of each, plus the mean over the last epoch's steps."""
    steps = [h for h in log_history if "loss" in h and "train_runtime" not in h]
    if not steps:
        return {}
    out = {k: v for k, v in steps[-1].items() if isinstance(v, int | float)}
    window = steps[-max(1, steps_per_epoch) :]
    for key in HEADLINE:
        values = [h[key] for h in window if key in h]
        if values:
            out[f"{key}_last_epoch_mean"] = sum(values) / len(values)
    return out


def log_line(logs: dict[str, Any]) -> str:
    keys = (*HEADLINE, "learning_rate", "epoch")
    return " ".join(f"{k}={logs[k]:.4g}" for k in keys if isinstance(logs.get(k), int | float))
