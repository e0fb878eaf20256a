"""What happens while TRL trains: metrics for Prometheus, a log line per logged step when there is no progress
bar, every checkpoint synced to storage and marked complete, with its files' sha256, once all ranks have saved it,
and the stop on SIGTERM at a step boundary that every rank agrees on."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ...adapters import checkpoints, interrupt, metrics
from ...adapters.progress import is_tty
from ...core.workspace import Workspace
from .distributed import any_rank, barrier, gather, local_share
from .summary import log_line

log = logging.getLogger(__name__)


class Observe(TrainerCallback):
    """Metrics and log lines per logged step, checkpoints synced as they are saved.

    Attributes:
        trainer: set once the trainer exists; its ``prefops_tokens`` feed the throughput gauge.
    """

    def __init__(self, ws: Workspace, local: Path, keep: int, collective_timeout: int) -> None:
        self.ws, self.local, self.keep, self.collective_timeout = ws, local, keep, collective_timeout
        self.trainer: Any = None
        self.last = (time.perf_counter(), 0)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        m = metrics.current()
        if m:
            m.set_phase("train")
            m.set("total_steps", state.max_steps)
            m.set("step", state.global_step)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        now, tokens = time.perf_counter(), int(self.trainer.prefops_tokens) if self.trainer else 0
        tps = (tokens - self.last[1]) / max(now - self.last[0], 1e-9)
        self.last = (now, tokens)
        headline = state.is_world_process_zero and logs is not None and "loss" in logs
        m = metrics.current()
        if m:
            m.record_rank_throughput(tps)
            m.record_memory()
            if headline and logs is not None:
                m.record_logs(logs, state.global_step)
        if headline and logs is not None and not is_tty():
            log.info("step %d/%d %s", state.global_step, state.max_steps, log_line(logs))

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        """Once every rank has saved: each hashes (and uploads) its share of the node's files; rank 0 writes the
        marker with every file's sha256, last. The other ranks wait for this in their next collective, so a save that
        takes over half of ``collectiveTimeoutSeconds`` is named in a warning."""
        start = time.monotonic()
        path = self.local / f"checkpoint-{state.global_step}"
        barrier()
        files = checkpoints.merge(gather(checkpoints.sync_share(path, self.ws.checkpoints, local_share())))
        if state.is_world_process_zero:
            checkpoints.mark_complete(self.ws, path, state.global_step, files)
            checkpoints.prune(self.ws, self.keep)
        took = time.monotonic() - start
        if took > self.collective_timeout / 2:
            log.warning(
                "%s took %.0f s to sync, over half of spec.training.collectiveTimeoutSeconds (%d s) that the other "
                "ranks wait for it: raise it, or a slower upload fails the group",
                path.name,
                took,
                self.collective_timeout,
            )


class StopOnSignal(TrainerCallback):
    """At every step boundary the ranks agree whether any of them got SIGTERM (one all-reduce of a flag); if one did,
    every rank saves a checkpoint of that step and stops training.

    Attributes:
        step: the step training stopped at, or None.
    """

    def __init__(self) -> None:
        self.step: int | None = None

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if any_rank(interrupt.requested()):
            self.step = state.global_step
            control.should_save = True
            control.should_training_stop = True
            if state.is_world_process_zero:
                log.warning("SIGTERM: saving checkpoint-%d, then stopping", state.global_step)
