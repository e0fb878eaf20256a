"""The train phase: TRL underneath, the reference log-probs read from the shared cache.

With precomputed log-probs the trainer never loads or runs a reference model: ``DPOTrainer`` is told the
log-probs are precomputed (so it keeps no reference model), and its own precompute pass is replaced by a
join with our cache on the row index. Runs as one process or as every rank under torchrun (DeepSpeed
ZeRO-2/3 from the spec); checkpoints go to ``storage.uri`` and a restart resumes from the newest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

from .. import checkpoints, precompute, storage
from .. import metrics as m
from ..errors import CacheError
from ..inputs import Inputs
from ..progress import is_tty
from ..trlconfig import Runtime, lora_kwargs, trl_kwargs
from ..uris import Uri
from ..workspace import timed

log = logging.getLogger(__name__)

TRAINED_MARKER = "prefops-trained.json"


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def runtime(inputs: Inputs) -> Runtime:
    import torch

    return Runtime(cuda=torch.cuda.is_available(), dtype=inputs.dtype, world_size=world_size(), tty=is_tty())


def load_reference(inputs: Inputs) -> dict[str, dict[int, tuple[float, float]]]:
    """index → (ref chosen, ref rejected) for every split, from a complete cache (finalizing it if needed)."""
    tables = {}
    for split in inputs.splits:
        cache = inputs.ref_cache(split)
        n_rows = len(inputs.splits[split])
        if cache.finalize(inputs.spec.reference.workers, n_rows, {"split": split}) is None:
            missing = cache.missing_shards(inputs.spec.reference.workers)
            raise RuntimeError(
                f"reference cache {cache.root} for the {split} split is incomplete (shards {missing} missing): "
                "run the precompute phase first"
            )
        tables[split] = cache.load()
        if len(tables[split]) != n_rows:
            raise CacheError(
                f"reference cache {cache.root} holds {len(tables[split])} rows, the {split} split {n_rows}"
            )
    return tables


def verify_sample(inputs: Inputs, model, table: dict[int, tuple[float, float]]) -> int:
    """Recompute a few random rows' reference log-probs with the (untrained) model; fail fast on a mismatch.

    Guards against a stale or foreign cache (a key collision, an edited model folder, a changed library).
    Returns the number of rows checked.
    """
    n = min(inputs.spec.reference.verify_samples, len(table))
    if n == 0:
        return 0
    rows = inputs.tokenized("train")
    picks = sorted(random.Random(inputs.spec.training.seed).sample(range(len(rows)), n))
    sample = rows.select(picks)
    precompute.prepare_model(model)
    try:
        got = precompute.compute(
            model,
            sample,
            pad_token_id=inputs.tokenizer.pad_token_id,
            max_length=inputs.spec.dataset.max_length,
            truncation_mode=inputs.spec.dataset.truncation_mode,
            batch_size=n,
        )
    finally:
        del model.forward  # drop the fused head again: the trainer adds its own
        model.train()
    exact = inputs.dtype == "float32"
    for idx, c, r in zip(got.index, got.chosen, got.rejected, strict=True):
        for label, ours, cached in (("chosen", c, table[idx][0]), ("rejected", r, table[idx][1])):
            tol = (1e-3 + 1e-4 * abs(cached)) if exact else (0.5 + 0.02 * abs(cached))
            if abs(ours - cached) > tol:
                raise CacheError(
                    f"reference cache {inputs.ref_cache('train').root} does not match the model: row {idx} "
                    f"{label} log-prob is {ours:.4f} now, {cached:.4f} in the cache (tolerance {tol:.4f}). "
                    "The cache is stale or was written by another model; delete that folder and re-run precompute"
                )
    log.info("reference cache verified on %d random rows", n)
    return n


#: family → (module, config class, trainer class) of the TRL trainer that runs it.
TRAINERS = {
    "dpo": ("trl", "DPOConfig", "DPOTrainer"),
    "cpo": ("trl.experimental.cpo", "CPOConfig", "CPOTrainer"),
    "orpo": ("trl.experimental.orpo", "ORPOConfig", "ORPOTrainer"),
    "kto": ("trl", "KTOConfig", "KTOTrainer"),
    "online-dpo": ("trl.experimental.online_dpo", "OnlineDPOConfig", "OnlineDPOTrainer"),
}
#: family → the dataset columns TRL's trainer reads its precomputed reference log-probs from.
REFERENCE_COLUMNS = {"dpo": ("ref_chosen_logps", "ref_rejected_logps"), "kto": ("ref_logps", "ref_KL_logps")}


def _trainer_classes(family: str):
    import importlib

    module, config, trainer = TRAINERS[family]
    mod = importlib.import_module(module)
    return getattr(mod, config), getattr(mod, trainer)


def make_trainer_class(base, family: str):
    """``base`` (a TRL trainer) that reads reference log-probs from our cache and counts its tokens."""

    class PrefopsTrainer(base):
        def __init__(
            self,
            *args,
            reference: dict[str, dict[int, tuple[float, float]]] | None = None,
            prefix_sharing: bool = False,
            **kwargs,
        ):
            self._prefops_reference = reference or {}
            self.prefops_tokens = 0
            with _skip_trl_model_hash(base):
                super().__init__(*args, **kwargs)
            self._prefops_packed = _prefix_sharing(self) if prefix_sharing else None

        def _precompute_ref_logps(self, dataset, name, batch_size):
            """Join the cached reference log-probs on the row index instead of computing them."""
            table, index = self._prefops_reference[name], dataset["index"]
            columns = REFERENCE_COLUMNS[family][: 1 if family == "kto" and not self.calculate_KL else 2]
            for pos, column in enumerate(columns):
                dataset = dataset.add_column(column, [table[i][pos] for i in index])
            return dataset

        def compute_loss(self, model, inputs, *args, **kwargs):
            mask = inputs.get("attention_mask")
            if mask is None:
                mask = inputs.get("chosen_attention_mask")
            if mask is not None:
                self.prefops_tokens += mask.sum()  # a tensor: no device sync per micro-batch, read at logging
            if self._prefops_packed is not None:
                model = self._prefops_packed(model)  # TRL's loss code, our packed forward underneath
            return super().compute_loss(model, inputs, *args, **kwargs)

        def _generate(self, model, prompts, images=None):
            """Online DPO: also log the generated completions' mean length, and count their tokens."""
            out = super()._generate(model, prompts, images)
            prompt_mask, completion_mask = out[1], out[3]
            self.prefops_tokens += int(prompt_mask.sum() + completion_mask.sum())
            lengths = completion_mask.sum(dim=1).float().mean()
            self.stats.setdefault("completion_length", []).append(self.accelerator.gather(lengths).mean().item())
            return out

    return PrefopsTrainer


def _prefix_sharing(trainer):
    """A wrapper for the model TRL's DPO loss calls that answers its policy forward packed, or None (and why, in
    the log) when the model's attention kernel cannot take the packed mask."""
    from .. import trl_packing

    return trl_packing.enable(trainer)


@contextlib.contextmanager
def _skip_trl_model_hash(base):
    """TRL's DPO and KTO trainers hash every weight to fingerprint their own precompute cache, which we replace:
    skip it (seconds to minutes on a large model, for nothing)."""
    import sys

    module = sys.modules[base.__module__]
    original = getattr(module, "hash_module", None)
    if original is not None:
        module.hash_module = lambda m: "prefops-reference-cache"
    try:
        yield
    finally:
        if original is not None:
            module.hash_module = original


def _callbacks(inputs: Inputs, local_ckpt: Path):
    from transformers import TrainerCallback

    remote = inputs.ws.checkpoints
    keep = inputs.spec.training.checkpoints_to_keep

    class Observe(TrainerCallback):
        """Metrics for Prometheus, one log line per logged step when there is no progress bar."""

        def __init__(self) -> None:
            self.trainer = None
            self.last = (time.perf_counter(), 0)

        def on_train_begin(self, args, state, control, **kw):
            metrics = m.current()
            if metrics:
                metrics.set_phase("train")
                metrics.set("total_steps", state.max_steps)
                metrics.set("step", state.global_step)

        def on_log(self, args, state, control, logs=None, **kw):
            metrics = m.current()
            now, tokens = time.perf_counter(), int(self.trainer.prefops_tokens) if self.trainer else 0
            tps = (tokens - self.last[1]) / max(now - self.last[0], 1e-9)
            self.last = (now, tokens)
            if metrics:
                metrics.record_rank_throughput(tps)
                metrics.record_memory()
                if state.is_world_process_zero and logs and "loss" in logs:
                    metrics.record_logs(logs, state.global_step)
            if state.is_world_process_zero and logs and "loss" in logs and not is_tty():
                log.info("step %d/%d %s", state.global_step, state.max_steps, _fmt(logs))

        def on_save(self, args, state, control, **kw):
            path = local_ckpt / f"checkpoint-{state.global_step}"
            checkpoints.upload(path, remote)
            _barrier()
            if state.is_world_process_zero:
                checkpoints.mark_complete(path, remote, state.global_step)
                checkpoints.prune(local_ckpt, remote, keep)

    return Observe()


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _leave_process_group() -> None:
    """Every rank waits until rank 0 has written the phase's results, then leaves the process group. A gloo group
    left for the interpreter's exit to tear down can abort a rank (SIGABRT, "terminate called without an active
    exception") and so fail a job whose training had finished."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _fmt(logs: dict[str, Any]) -> str:
    keys = ("loss", "rewards/accuracies", "rewards/margins", "learning_rate", "epoch")
    return " ".join(f"{k}={logs[k]:.4g}" for k in keys if isinstance(logs.get(k), int | float))


def summarize(log_history: list[dict[str, Any]], steps_per_epoch: int) -> dict[str, float]:
    """Final metrics: the last logged value of each, plus the mean over the last epoch's steps. Pure."""
    steps = [h for h in log_history if "loss" in h and "train_runtime" not in h]
    if not steps:
        return {}
    out = {k: v for k, v in steps[-1].items() if isinstance(v, int | float)}
    window = steps[-max(1, steps_per_epoch) :]
    for key in ("loss", "rewards/accuracies", "rewards/margins"):
        values = [h[key] for h in window if key in h]
        if values:
            out[f"{key}_last_epoch_mean"] = sum(values) / len(values)
    return out


def run(inputs: Inputs) -> dict[str, Any]:
    """Train, resuming from the newest complete checkpoint; hand the weights to export. Returns the report."""
    spec = inputs.spec
    rt = runtime(inputs)
    family = spec.algorithm.info.family
    config_cls, trainer_base = _trainer_classes(family)
    reference = load_reference(inputs) if spec.precompute else None
    local_ckpt = inputs.ws.local_dir("checkpoints")
    if spec.training.deepspeed is not None and rt.world_size > 1:
        import deepspeed

        # ZeRO-3 partitions the weights while they load (zero.Init), which needs DeepSpeed's own process group
        deepspeed.init_distributed(dist_backend="nccl" if rt.cuda else "gloo")
    args = config_cls(**trl_kwargs(spec, rt, str(local_ckpt), precompute=reference is not None))
    report: dict[str, Any] = {"worldSize": rt.world_size, "algorithm": spec.algorithm.name}
    with timed(report):
        model = inputs.load_model()
        zero3 = spec.training.deepspeed is not None and spec.training.deepspeed.stage == 3
        if reference is not None and not zero3:
            report["verifiedRows"] = verify_sample(inputs, model, reference["train"])
        trainer = _build(inputs, model, args, trainer_base, reference, family, local_ckpt)
        resume = checkpoints.newest(local_ckpt, inputs.ws.checkpoints)
        if resume:
            log.info("resuming from %s", resume.name)
            report["resumedFrom"] = resume.name
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        steps_per_epoch = max(1, result.global_step // max(1, round(trainer.state.num_train_epochs or 1)))
        report["steps"] = result.global_step
        report["metrics"] = summarize(trainer.state.log_history, steps_per_epoch)
        report["logHistory"] = [h for h in trainer.state.log_history if "loss" in h]
        _save_trained(inputs, trainer)
    if rank() == 0:
        storage.write_json(
            inputs.ws.trained.join(TRAINED_MARKER), {"steps": report["steps"], "metrics": report["metrics"]}
        )
        inputs.ws.write_report("train", report)
    _leave_process_group()
    return report


def _build(inputs, model, args, trainer_base, reference, family, local_ckpt):
    splits = {n: s.rows for n, s in inputs.splits.items()}
    if family not in REFERENCE_COLUMNS:
        splits = {n: rows.remove_columns(["index"]) for n, rows in splits.items()}
    peft_config = None
    if (lk := lora_kwargs(inputs.spec)) is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(**lk)
    observer = _callbacks(inputs, local_ckpt)
    kwargs: dict[str, Any] = {"reference": reference} if family in REFERENCE_COLUMNS else {}
    if family == "dpo":
        kwargs["prefix_sharing"] = inputs.spec.training.prefix_sharing
    if family == "online-dpo":
        kwargs["reward_funcs"], kwargs["reward_processing_classes"] = load_reward_model(inputs)
    trainer = make_trainer_class(trainer_base, family)(
        model=model,
        args=args,
        train_dataset=splits["train"],
        eval_dataset=splits.get("eval"),
        processing_class=inputs.tokenizer,
        peft_config=peft_config,
        callbacks=[observer],
        **kwargs,
    )
    observer.trainer = trainer
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # its raw dicts on stdout duplicate our log lines
    return trainer


def load_reward_model(inputs: Inputs):
    """Online DPO's judge: a sequence-classification model with one output and its own tokenizer."""
    from transformers import AutoModelForSequenceClassification

    from ..modelio import load_tokenizer, model_dir, model_init_kwargs

    spec = inputs.spec.reward_model
    path = model_dir(spec, field="spec.rewardModel.source")
    kwargs = model_init_kwargs(spec, attn=inputs.spec.model)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)
    return model, load_tokenizer(path, inputs.spec.model.trust_remote_code)


def _save_trained(inputs: Inputs, trainer) -> None:
    """Save the final weights (adapter, or full model) for export; the caller writes the marker last."""
    target = inputs.ws.trained
    local = Path(target.path) if target.is_local else inputs.ws.local_dir("trained")
    trainer.save_model(str(local))  # every rank: ZeRO-3 gathers the weights here
    if rank() != 0:
        return
    inputs.tokenizer.save_pretrained(str(local))
    if not target.is_local:
        storage.upload_dir(local, target, skip=frozenset({TRAINED_MARKER}))


def trained_dir(inputs: Inputs) -> Path:
    """The trained weights as a local folder (downloaded from storage when remote); error if train did not finish."""
    target: Uri = inputs.ws.trained
    if not storage.exists(target.join(TRAINED_MARKER)):
        raise RuntimeError(f"no finished training result at {target}: run the train phase first")
    if target.is_local:
        return Path(target.path)
    return storage.download_dir(target, inputs.ws.local_dir("trained"))
