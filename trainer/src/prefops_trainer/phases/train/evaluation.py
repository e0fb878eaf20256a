"""Evaluation on ``spec.dataset.evalSplit`` while training (docs/contract.md §7).

TRL evaluates at every checkpoint and once more at the last step (``eval_strategy: steps`` from
``core.trlconfig``), on the eval split whose reference log-probs the precompute phase cached beside the train
split's (the trainer joins them like the train split's: no reference model runs). :class:`Served` puts each result
on rank 0's eval gauges and in a log line; :func:`final` makes sure there is an evaluation of the last step and
returns what the phase report keeps: the final evaluation and every earlier one, from the trainer's log history (so
a resumed phase keeps the evaluations before its restart).
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ...adapters.metrics import current as served_metrics
from ...adapters.progress import is_tty
from ...core.evaluation import Evaluation, from_trl, history
from ...core.reports import TrainReport
from ...core.spec import JobSpec
from .summary import HEADLINE

log = logging.getLogger(__name__)


class Served(TrainerCallback):
    """Each evaluation's results on the eval gauges (rank 0) and, without a progress bar, in a log line."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        if not state.is_world_process_zero:
            return
        values = from_trl(metrics or {}, self.names)
        served = served_metrics()
        if served:
            served.record_eval(values, state.global_step)
        if not is_tty():
            shown = " ".join(f"{k}={v:.4g}" for k, v in values.items() if k in HEADLINE)
            log.info("eval step %d/%d %s", state.global_step, state.max_steps, shown)


def attach(spec: JobSpec, trainer: Any) -> None:
    """Serve the trainer's evaluations, or say why a job with an eval split is not evaluated."""
    if spec.evaluates:
        trainer.add_callback(Served(spec.algorithm.info.eval_metrics))
    elif spec.dataset.eval_split is not None:
        log.warning(
            "spec.dataset.evalSplit: algorithm %r reports no evaluation metrics (TRL's trainer computes them from "
            "generations during training steps), so the %r split is checked but not evaluated",
            spec.algorithm.name,
            spec.dataset.eval_split,
        )


def final(spec: JobSpec, trainer: Any) -> TrainReport:
    """What the phase report keeps of the evaluations (nothing for a job that does not evaluate): ``evaluation``
    (``{split, step, metrics}``, the last step's) and ``evalHistory`` (every evaluation, in order). Evaluates the
    last step when the trainer has not (every rank: the evaluation is collective)."""
    if not spec.evaluates:
        return {}
    names = spec.algorithm.info.eval_metrics
    found = history(trainer.state.log_history, names)
    if not found or found[-1].step != trainer.state.global_step:
        trainer.evaluate()
        found = history(trainer.state.log_history, names)
    last: Evaluation = found[-1]
    return {
        "evaluation": {"split": spec.dataset.eval_split, **last.to_json()},
        "evalHistory": [e.to_json() for e in found],
    }
