"""Spec → the TRL trainer that runs it, keyword arguments of TRL's config classes, and the DeepSpeed config.
Pure: no TRL, torch or DeepSpeed import (classes are named, not imported), so every mapping is unit-tested
without them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .algorithms import Family
from .spec import DeepSpeedSpec, GenerationSpec, JobSpec


@dataclass(frozen=True)
class Runtime:
    """What the machine decides: device kind, dtype after ``auto``, world size."""

    cuda: bool
    dtype: str  # float32 | bfloat16 | float16
    world_size: int = 1
    tty: bool = False


def deepspeed_config(ds: DeepSpeedSpec) -> dict[str, Any]:
    """A ZeRO-2/3 config for the Hugging Face integration: sizes and precision are ``auto`` so the Trainer
    fills them from its own arguments (and bf16 follows the model dtype: on for bfloat16 GPUs).

    ZeRO-3 never gathers the 16-bit model at a save (``adapters.zero3``): a full fine-tune's ranks save their own
    partitions, and a LoRA job gathers its adapter's parameters alone, the frozen model left partitioned."""
    zero: dict[str, Any] = {
        "stage": ds.stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if ds.stage == 3:
        zero |= {
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_gather_16bit_weights_on_model_save": False,
        }
    else:
        zero |= {"allgather_partitions": True, "allgather_bucket_size": 2e8, "reduce_scatter": True}
    if ds.offload == "cpu":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if ds.stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def training_kwargs(spec: JobSpec, rt: Runtime, output_dir: str) -> dict[str, Any]:
    """Arguments every TRL config shares (``transformers.TrainingArguments``)."""
    t = spec.training
    return {
        "output_dir": output_dir,
        "num_train_epochs": t.epochs,
        "max_steps": t.max_steps or -1,
        "learning_rate": t.learning_rate,
        "lr_scheduler_type": t.lr_scheduler,
        # transformers 5 dropped warmup_ratio: a warmup_steps below 1 is the fraction of all steps, and the spec's
        # warmupRatio is always below 1
        "warmup_steps": t.warmup_ratio,
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "per_device_train_batch_size": t.per_device_batch_size,
        "per_device_eval_batch_size": t.per_device_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation,
        "gradient_checkpointing": t.gradient_checkpointing,
        "seed": t.seed,
        "data_seed": t.seed,
        "logging_strategy": "steps",
        "logging_steps": t.log_every_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": t.checkpoint_every_steps,
        "save_total_limit": t.checkpoints_to_keep,
        # docs/contract.md §7: at every checkpoint, and (transformers does it) once more at the last step
        "eval_strategy": "steps" if spec.evaluates else "no",
        "eval_steps": t.checkpoint_every_steps,
        "report_to": [],
        "disable_tqdm": not rt.tty,
        "bf16": rt.dtype == "bfloat16",
        "fp16": rt.dtype == "float16",
        "use_cpu": not rt.cuda,
        "ddp_backend": ("nccl" if rt.cuda else "gloo") if rt.world_size > 1 else None,
        # the trainer starts the process group itself with this timeout (phases.train.distributed.init_group)
        "ddp_timeout": t.collective_timeout_seconds,
        "deepspeed": deepspeed_config(t.deepspeed) if t.deepspeed else None,
        "dataloader_num_workers": 0,
        "max_length": spec.dataset.max_length,
        "beta": spec.algorithm.beta,
        "disable_dropout": True,
    }


def _dpo_kwargs(spec: JobSpec, precompute: bool) -> dict[str, Any]:
    a = spec.algorithm
    return {
        "loss_type": list(a.losses),
        "loss_weights": list(a.weights) if a.loss_weights else None,
        "label_smoothing": a.label_smoothing,
        "truncation_mode": spec.dataset.truncation_mode,
        "precompute_ref_log_probs": precompute,
        "precompute_ref_batch_size": spec.reference.batch_size,
    }


def _cpo_kwargs(spec: JobSpec, precompute: bool) -> dict[str, Any]:
    a = spec.algorithm
    return {
        "loss_type": a.info.trl_loss_type or a.losses[0],
        "cpo_alpha": a.effective_cpo_alpha,
        "simpo_gamma": a.simpo_gamma,
        "alpha": a.effective_alpha,
        "label_smoothing": a.label_smoothing,
    }


def _orpo_kwargs(spec: JobSpec, precompute: bool) -> dict[str, Any]:
    return {}  # beta (the odds-ratio weight, lambda) and max_length are shared


def _kto_kwargs(spec: JobSpec, precompute: bool) -> dict[str, Any]:
    a = spec.algorithm
    return {
        "loss_type": a.losses[0],
        "desirable_weight": a.desirable_weight,
        "undesirable_weight": a.undesirable_weight,
        "precompute_ref_log_probs": precompute,
        "precompute_ref_batch_size": spec.reference.batch_size,
    }


def _online_dpo_kwargs(spec: JobSpec, precompute: bool) -> dict[str, Any]:
    a, g = spec.algorithm, spec.generation or GenerationSpec()
    return {
        "loss_type": a.losses[0],
        "beta": [a.beta],
        "max_new_tokens": g.max_new_tokens,
        "temperature": g.temperature,
        "top_p": g.top_p,
    }


@dataclass(frozen=True)
class TrlTrainer:
    """The TRL trainer of one ``Algorithm.family``.

    Attributes:
        module: the module that exports both classes.
        config: the config class (``DPOConfig``, ...).
        trainer: the trainer class (``DPOTrainer``, ...).
        kwargs: the algorithm's own arguments for ``config``: ``kwargs(spec, precompute)``.
        reference_columns: the dataset columns the trainer reads precomputed reference log-probs from (chosen and
            rejected; KTO: the completion's); empty for trainers that read none.
        kl_column: KTO: the column of the KL completions' reference log-probs, read when the loss has a KL term.
    """

    module: str
    config: str
    trainer: str
    kwargs: Callable[[JobSpec, bool], dict[str, Any]]
    reference_columns: tuple[str, ...] = ()
    kl_column: str | None = None


TRL_TRAINERS: dict[Family, TrlTrainer] = {
    "dpo": TrlTrainer("trl", "DPOConfig", "DPOTrainer", _dpo_kwargs, ("ref_chosen_logps", "ref_rejected_logps")),
    "cpo": TrlTrainer("trl.experimental.cpo", "CPOConfig", "CPOTrainer", _cpo_kwargs),
    "orpo": TrlTrainer("trl.experimental.orpo", "ORPOConfig", "ORPOTrainer", _orpo_kwargs),
    "kto": TrlTrainer("trl", "KTOConfig", "KTOTrainer", _kto_kwargs, ("ref_logps",), kl_column="ref_KL_logps"),
    "online-dpo": TrlTrainer("trl.experimental.online_dpo", "OnlineDPOConfig", "OnlineDPOTrainer", _online_dpo_kwargs),
}


def trl_trainer(spec: JobSpec) -> TrlTrainer:
    return TRL_TRAINERS[spec.algorithm.info.family]


def reference_columns(spec: JobSpec) -> tuple[str, ...]:
    """The columns the job's trainer reads precomputed reference log-probs from, in the cache's column order."""
    t = trl_trainer(spec)
    return t.reference_columns + ((t.kl_column,) if t.kl_column and spec.algorithm.kl_term else ())


def algorithm_kwargs(spec: JobSpec, precompute: bool) -> dict[str, Any]:
    """The algorithm's own arguments for its TRL config class (DPO, CPO, ORPO, KTO or OnlineDPO config)."""
    return trl_trainer(spec).kwargs(spec, precompute)


def trl_kwargs(spec: JobSpec, rt: Runtime, output_dir: str, precompute: bool) -> dict[str, Any]:
    return training_kwargs(spec, rt, output_dir) | algorithm_kwargs(spec, precompute)


def lora_kwargs(spec: JobSpec) -> dict[str, Any] | None:
    """``peft.LoraConfig`` arguments, or None for full fine-tuning."""
    lora = spec.model.lora
    if lora is None:
        return None
    targets: str | list[str] = list(lora.target_modules)
    if targets == ["all-linear"]:
        targets = "all-linear"
    return {
        "r": lora.r,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": targets,
        "task_type": "CAUSAL_LM",
    }
