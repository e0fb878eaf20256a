"""Helpers of the prefix-sharing tests (tests/trainer/test_packing.py, test_prefix_families.py): random and TRL-collated
pairs, TRL's DPOTrainer on the tiny data, and the comparison of a packed forward with TRL's concatenated one."""

from __future__ import annotations

import random

import torch

from .trainer_jobs import TINY

TOLERANCE = 1e-5
#: What DPOTrainer's loss reads from its policy (without WPO weighting).
DPO_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")


def random_rows(n: int, vocab: int, seed: int, prompt=(1, 40), completion=(1, 25)):
    rng = random.Random(seed)

    def ids(lo_hi):
        return [rng.randrange(4, vocab) for _ in range(rng.randint(*lo_hi))]

    return [
        {"prompt_ids": ids(prompt), "chosen_ids": ids(completion), "rejected_ids": ids(completion)} for _ in range(n)
    ]


def trl_batch(rows, max_length=None):
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    batch = DataCollatorForPreference(pad_token_id=0, max_length=max_length)(rows)
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    call = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    return call | {"labels": labels, "fused_lm_head": True}


def assert_same_outputs(theirs, ours):
    for field in ("log_probs", "entropy", "mean_logits"):
        a, b = getattr(theirs, field), getattr(ours, field)
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= TOLERANCE, field
    assert torch.equal(theirs.is_top1, ours.is_top1)
    assert theirs.log_probs.abs().sum() > 1, "real log-probs"


def dpo_trainer(tmp_path, model):
    """TRL's DPOTrainer on the tiny data (its own precompute), and one collated training batch."""
    import datasets
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    rows = datasets.load_dataset("json", data_files=str(TINY / "prefs.jsonl"), split="train").select(range(8))
    args = DPOConfig(output_dir=str(tmp_path / "trl"), precompute_ref_log_probs=True, per_device_train_batch_size=8,
                     max_length=64, report_to=[], use_cpu=True, label_smoothing=0.1, beta=0.5)  # fmt: skip
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=rows, processing_class=AutoTokenizer.from_pretrained(TINY / "model")
    )
    batch = next(iter(trainer.get_train_dataloader()))
    return trainer, {k: v.to(model.device) for k, v in batch.items()}
