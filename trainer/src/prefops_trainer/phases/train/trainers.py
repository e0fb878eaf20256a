"""The TRL trainer a job runs: its classes named by the algorithm table, made to read our reference cache (through
the TRL bridge), with LoRA, the reward model Online DPO needs, and our callbacks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...adapters import trl_bridge
from ...adapters.modelio import load_tokenizer, model_dir, model_init_kwargs
from ...adapters.refcache import RefTable
from ...compute import prefix_sharing
from ...core.spec import JobSpec
from ...core.trlconfig import lora_kwargs, reference_columns, trl_trainer
from ...inputs import Inputs
from .callbacks import Observe

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def classes(spec: JobSpec) -> tuple[type[Any], type[Any]]:
    """(config class, trainer class) of the TRL trainer that runs the job's algorithm."""
    t = trl_trainer(spec)
    return trl_bridge.trainer_classes(t.module, t.config, t.trainer)


def build(
    inputs: Inputs,
    model: PreTrainedModel,
    args: Any,
    base: type[Any],
    reference: dict[str, RefTable] | None,
    local_ckpt: Path,
    tokens: dict[str, Dataset] | None = None,
) -> Any:
    """The trainer: ``base`` reading ``reference`` (None: TRL computes what it needs) and the splits ``tokens`` holds
    already tokenized (the others TRL tokenizes), with our callbacks."""
    spec, columns = inputs.spec, reference_columns(inputs.spec)
    splits = {n: _training_rows(spec, s.rows, (tokens or {}).get(n)) for n, s in inputs.splits.items()}
    kwargs: dict[str, Any] = {"reference": reference} if columns else {}
    if not columns:  # only a trainer that joins our cache reads the row index
        splits = {n: rows.remove_columns(["index"]) for n, rows in splits.items()}
    if spec.algorithm.info.online:
        kwargs["reward_funcs"], kwargs["reward_processing_classes"] = load_reward_model(inputs)
    if spec.training.prefix_sharing and trl_trainer(spec).trainer == "DPOTrainer":
        kwargs["policy"] = prefix_sharing.enable
    if spec.training.group_by_length:
        if spec.algorithm.info.online:
            log.warning("training.groupByLength: Online DPO's rows are prompts it completes; its batches are random")
        kwargs["group_by_length"] = True
    t = spec.training
    observer = Observe(inputs.ws, local_ckpt, t.checkpoints_to_keep, t.collective_timeout_seconds)
    trainer = trl_bridge.trainer_class(base, columns)(
        model=model,
        args=args,
        train_dataset=splits["train"],
        eval_dataset=splits.get("eval"),
        processing_class=inputs.tokenizer,
        peft_config=_peft_config(spec),
        callbacks=[observer],
        **kwargs,
    )
    observer.trainer = trainer
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # its raw dicts on stdout duplicate our log lines
    return trainer


def _training_rows(spec: JobSpec, rows: Dataset, tokens: Dataset | None) -> Dataset:
    """What the trainer is given for a split: its rows, for TRL to tokenize, or the cache's ``tokens`` of them, in the
    columns the trainer's own tokenization gives (KTO: its completions, KL completions and labels)."""
    if tokens is None:
        return rows
    if spec.algorithm.info.data == "unpaired":
        return trl_bridge.unpaired_from_tokens(tokens, rows["label"], spec.algorithm.kl_term)
    return tokens


def prefix_sharing_status(spec: JobSpec, trainer: Any) -> str | None:
    """``on``, or ``off: <reason>``, for a DPO job that asks for prefix sharing; None for any other job."""
    if not (spec.training.prefix_sharing and trl_trainer(spec).trainer == "DPOTrainer"):
        return None
    return prefix_sharing.decide(prefix_sharing.base_model(trainer.model)).status


def _peft_config(spec: JobSpec) -> Any:
    lk = lora_kwargs(spec)
    if lk is None:
        return None
    from peft import LoraConfig

    return LoraConfig(**lk)


def load_reward_model(inputs: Inputs) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Online DPO's judge: a sequence-classification model with one output and its own tokenizer."""
    from transformers import AutoModelForSequenceClassification

    spec = inputs.spec.reward_model
    assert spec is not None, "the spec parser requires a reward model for an online algorithm"
    path = model_dir(spec, field="spec.rewardModel.source")
    kwargs = model_init_kwargs(inputs.spec.model, spec)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)
    return model, load_tokenizer(path, spec.trust_remote_code)
