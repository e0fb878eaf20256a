"""The train phase from start to finish: reference tables, TRL config, model, trainer, training, the weights
handed to export, the report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...adapters import checkpoints, interrupt, metrics, storage, trained, unpickling, zero3
from ...adapters.refcache import RefTable
from ...core.errors import Interrupted
from ...core.reports import TrainReport
from ...core.trlconfig import trl_kwargs
from ...inputs import Inputs
from .. import reports
from . import distributed, evaluation, trainers
from .callbacks import StopOnSignal
from .reference import load_reference, load_tokens, verify_sample
from .summary import summarize

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger(__name__)


def run(inputs: Inputs) -> TrainReport:
    """Train, resuming from the newest complete checkpoint; hand the weights to export. Returns the report;
    :class:`Interrupted` once every rank saved a checkpoint and stopped on SIGTERM."""
    metrics.enter("train")
    spec = inputs.spec
    rt = distributed.runtime(inputs.dtype)
    config_cls, base = trainers.classes(spec)
    reference = load_reference(inputs) if spec.precompute else None
    tokens = load_tokens(inputs)  # the precompute phase's tokenization, when training can read it
    resume = _resume_point(inputs)  # before the process group: a slow download waits in no collective
    distributed.init_group(spec, rt)
    local_ckpt = storage.local_dir(inputs.ws.local("checkpoints"))
    args = config_cls(**trl_kwargs(spec, rt, str(local_ckpt), precompute=reference is not None))
    report: TrainReport = {"worldSize": rt.world_size, "algorithm": spec.algorithm.name}
    report["attempt"] = inputs.ws.attempt
    start = reports.started(report)
    trainer, stop = _trainer(inputs, args, base, (reference, tokens), local_ckpt, report)
    with interrupt.deferred():  # from here SIGTERM stops the ranks at a step boundary, or lets them finish
        _train(inputs, trainer, resume, report)
        if stop.step is not None:
            distributed.leave_process_group()
            raise Interrupted(f"training stopped on SIGTERM at step {stop.step}; checkpoint-{stop.step} is saved")
        local, sent = _save_trained(inputs, trainer)
        distributed.leave_process_group()  # the upload below waits in no collective
        reports.finished(report, start)
        if distributed.rank() == 0:
            trained.hand_over(inputs.ws, local, report, sent)
    return report


def _trainer(
    inputs: Inputs,
    args: Any,
    base: type[Any],
    cached: tuple[dict[str, RefTable] | None, dict[str, Dataset]],
    local_ckpt: Path,
    report: TrainReport,
) -> tuple[Any, StopOnSignal]:
    """The model loaded, the cache (its reference log-probs, and the splits' tokens) checked against it (under ZeRO-3
    too), the trainer, and its stop on SIGTERM."""
    model = inputs.load_model()
    reference, tokens = cached
    if reference is not None:
        report["verifiedRows"] = verify_sample(inputs, model, reference["train"], tokens.get("train"))
    report["tokenizedBy"] = "precompute" if tokens else "training"
    trainer = trainers.build(inputs, model, args, base, reference, local_ckpt, tokens)
    shared = trainers.prefix_sharing_status(inputs.spec, trainer)
    if shared is not None:
        report["prefixSharing"] = shared
    evaluation.attach(inputs.spec, trainer)
    stop = StopOnSignal()
    trainer.add_callback(stop)
    return trainer, stop


def _train(inputs: Inputs, trainer: Any, resume: Path | None, report: TrainReport) -> None:
    """Train (from ``resume``, which every rank must have chosen) and fill the report; after a stop on SIGTERM the
    report is not used."""
    chosen = resume.relative_to(inputs.ws.local_root).as_posix() if resume else None  # attempts/<a>/checkpoints/<n>
    distributed.agree(chosen, "the checkpoint to resume from")
    if resume:
        log.info("resuming from %s", resume.name)
        report["resumedFrom"] = resume.name
    with unpickling.weights_only():  # DeepSpeed asks torch.load for the full unpickler: it gets the weights-only one
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    steps_per_epoch = max(1, result.global_step // max(1, round(trainer.state.num_train_epochs or 1)))
    report["steps"] = result.global_step
    report["metrics"] = summarize(trainer.state.log_history, steps_per_epoch)
    report["logHistory"] = [h for h in trainer.state.log_history if "loss" in h]
    report |= evaluation.final(inputs.spec, trainer)


def _resume_point(inputs: Inputs) -> Path | None:
    """The newest complete checkpoint of the newest attempt that has one, fetched and checked against its marker by
    one process per node (the others wait on its word, :func:`distributed.node_leader`), before any process group
    exists, and every file it unpickles loaded with the weights-only unpickler (:func:`unpickling.refuse_unsafe`). A
    checkpoint pruned while it was fetched (by an older attempt still running) is passed over."""

    def fetch() -> str | None:
        for _ in range(3):
            found = checkpoints.newest(inputs.ws)
            if found is None:
                return None
            try:
                path = checkpoints.fetch_verified(inputs.ws, found)
            except checkpoints.Vanished as e:
                log.warning("%s; looking again", e)
                continue
            unpickling.refuse_unsafe(path, str(inputs.ws.checkpoints_of(found.attempt).join(found.name)))
            return str(path)
        raise RuntimeError("every checkpoint chosen to resume from was removed while it was fetched")

    found = distributed.node_leader("resume", fetch)
    return Path(found) if found else None


def _save_trained(inputs: Inputs, trainer: Any) -> tuple[Path, dict[str, str]]:
    """Save the final weights (adapter, or full model) for export into a local folder; return it, and the files the
    ranks sent to storage themselves (ZeRO-3 partitions: each rank its own, wherever its node is) with their sha256.
    The caller (rank 0) hands the rest over (:func:`trained.hand_over`)."""
    target = inputs.ws.trained
    local = Path(target.path) if target.is_local else storage.local_dir(inputs.ws.local("trained"))
    if distributed.rank() == 0:  # the one rank that writes files
        trained.withdraw(inputs.ws)
    sent: dict[str, str] = {}
    if zero3.partitioned(trainer) and not zero3.saves_adapter(trainer):  # each rank its own partitions, no whole model
        rank, world = distributed.rank(), distributed.world_size()
        zero3.save_trained(trainer, local, rank, world)
        sent = checkpoints.merge(distributed.gather(zero3.send_own(local, inputs.ws.trained, rank, world)))
    else:
        trainer.save_model(str(local))  # every rank: ZeRO-3 with LoRA gathers the adapter alone here
    if distributed.rank() == 0:
        inputs.tokenizer.save_pretrained(str(local))
    return local, sent
