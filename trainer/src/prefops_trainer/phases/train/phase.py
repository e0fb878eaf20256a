"""The train phase from start to finish: reference tables, TRL config, model, trainer, training, the weights
handed to export, the report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ...adapters import checkpoints, metrics, storage
from ...adapters.refcache import RefTable
from ...core.trlconfig import trl_kwargs
from ...core.workspace import TRAINED_MARKER
from ...inputs import Inputs
from .. import reports
from . import distributed, evaluation, trainers
from .reference import load_reference, verify_sample
from .summary import summarize

log = logging.getLogger(__name__)


def run(inputs: Inputs) -> reports.Report:
    """Train, resuming from the newest complete checkpoint; hand the weights to export. Returns the report."""
    metrics.enter("train")
    spec = inputs.spec
    rt = distributed.runtime(inputs.dtype)
    config_cls, base = trainers.classes(spec)
    reference = load_reference(inputs) if spec.precompute else None
    local_ckpt = storage.local_dir(inputs.ws.local("checkpoints"))
    distributed.init_deepspeed(spec, rt)
    args = config_cls(**trl_kwargs(spec, rt, str(local_ckpt), precompute=reference is not None))
    report: reports.Report = {"worldSize": rt.world_size, "algorithm": spec.algorithm.name}
    with reports.timed(report):
        trainer = _trainer(inputs, args, base, reference, local_ckpt, report)
        _train(inputs, trainer, local_ckpt, report)
        _save_trained(inputs, trainer)
    if distributed.rank() == 0:
        handed = {k: report[k] for k in ("steps", "metrics", "evaluation") if k in report}
        storage.write_json(inputs.ws.trained_marker, handed)
        reports.write(inputs.ws, "train", report)
    distributed.leave_process_group()
    return report


def _trainer(
    inputs: Inputs,
    args: Any,
    base: type[Any],
    reference: dict[str, RefTable] | None,
    local_ckpt: Path,
    report: reports.Report,
) -> Any:
    """The model loaded, the cache checked against it (under ZeRO-3 too), the trainer."""
    model = inputs.load_model()
    if reference is not None:
        report["verifiedRows"] = verify_sample(inputs, model, reference["train"])
    trainer = trainers.build(inputs, model, args, base, reference, local_ckpt)
    shared = trainers.prefix_sharing_status(inputs.spec, trainer)
    if shared is not None:
        report["prefixSharing"] = shared
    evaluation.attach(inputs.spec, trainer)
    return trainer


def _train(inputs: Inputs, trainer: Any, local_ckpt: Path, report: reports.Report) -> None:
    resume = _resume_point(inputs, local_ckpt)
    if resume:
        log.info("resuming from %s", resume.name)
        report["resumedFrom"] = resume.name
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    steps_per_epoch = max(1, result.global_step // max(1, round(trainer.state.num_train_epochs or 1)))
    report["steps"] = result.global_step
    report["metrics"] = summarize(trainer.state.log_history, steps_per_epoch)
    report["logHistory"] = [h for h in trainer.state.log_history if "loss" in h]
    report |= evaluation.final(inputs.spec, trainer)


def _resume_point(inputs: Inputs, local_ckpt: Path) -> Path | None:
    """The newest complete checkpoint (rank 0 picks it), fetched and checked against its marker by one process per
    node before any rank loads it."""
    remote = inputs.ws.checkpoints
    found = distributed.from_rank_zero(
        checkpoints.newest(local_ckpt, remote, inputs.ws.run) if distributed.rank() == 0 else None
    )
    if found and distributed.local_share()[0] == 0:
        checkpoints.fetch_verified(local_ckpt, remote, *found)
    distributed.barrier()
    return local_ckpt / found[0] if found else None


def _save_trained(inputs: Inputs, trainer: Any) -> None:
    """Save the final weights (adapter, or full model) for export; the caller writes the marker last."""
    target = inputs.ws.trained
    local = Path(target.path) if target.is_local else storage.local_dir(inputs.ws.local("trained"))
    trainer.save_model(str(local))  # every rank: ZeRO-3 gathers the weights here
    if distributed.rank() != 0:
        return
    inputs.tokenizer.save_pretrained(str(local))
    if not target.is_local:
        storage.upload_dir(local, target, skip=frozenset({TRAINED_MARKER}))
