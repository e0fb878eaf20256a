"""What happens while TRL trains: metrics for Prometheus, a log line per logged step when there is no progress
bar, and every checkpoint synced to storage and marked complete, with its files' sha256, once all ranks have saved
it."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ...adapters import checkpoints, metrics
from ...adapters.progress import is_tty
from ...core.uris import Uri
from .distributed import barrier, gather, local_share
from .summary import log_line

log = logging.getLogger(__name__)


class Observe(TrainerCallback):
    """Metrics and log lines per logged step, checkpoints synced as they are saved.

    Attributes:
        trainer: set once the trainer exists; its ``prefops_tokens`` feed the throughput gauge.
    """

    def __init__(self, local: Path, remote: Uri, keep: int, run: str) -> None:
        self.local, self.remote, self.keep, self.run = local, remote, keep, run
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
        marker with every file's sha256, last."""
        path = self.local / f"checkpoint-{state.global_step}"
        barrier()
        files = checkpoints.merge(gather(checkpoints.sync_share(path, self.remote, local_share())))
        if state.is_world_process_zero:
            checkpoints.mark_complete(path, self.remote, state.global_step, self.run, files)
            checkpoints.prune(self.local, self.remote, self.keep)
