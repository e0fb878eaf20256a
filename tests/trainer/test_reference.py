"""Reference log-probs: ours equal TRL's own precompute, and training with them never runs a reference model."""

import gc
from pathlib import Path

import numpy as np
import pytest
import torch
from support.forward_counter import ForwardCounter
from support.trainer_jobs import TINY, job_doc

from prefops_trainer.adapters import storage
from prefops_trainer.core.spec import parse_job
from prefops_trainer.core.workspace import TRAINED_MARKER
from prefops_trainer.inputs import load_inputs
from prefops_trainer.phases import precompute as precompute_phase
from prefops_trainer.phases import train as train_phase
from prefops_trainer.phases.train import trainers


def trl_reference(rows, tokenizer, max_length: int, truncation_mode: str = "keep_start"):
    """TRL's own precompute_ref_log_probs on the same model and data."""
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    model = AutoModelForCausalLM.from_pretrained(TINY / "model", dtype=torch.float32)
    args = DPOConfig(
        output_dir="/tmp/prefops-trl-ref",
        precompute_ref_log_probs=True,
        max_length=max_length,
        truncation_mode=truncation_mode,
        per_device_train_batch_size=4,
        report_to=[],
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
    ds = trainer.train_dataset
    return torch.tensor(ds["ref_chosen_logps"]), torch.tensor(ds["ref_rejected_logps"])


@pytest.mark.parametrize(
    ("data", "max_length", "truncation"),
    [
        ("prefs.jsonl", 64, "keep_start"),
        ("prefs-chat.jsonl", 64, "keep_start"),
        ("prefs.jsonl", 14, "keep_start"),
        ("prefs-chat.jsonl", 16, "keep_end"),
    ],
    ids=["plain", "conversational", "truncated", "keep-end"],
)
def test_precomputed_logps_equal_trl_precompute(tmp_path, data, max_length, truncation):
    job = parse_job(
        job_doc(
            tmp_path,
            dataset={
                "source": str(TINY / data),
                "maxLength": max_length,
                "truncationMode": truncation,
                "maxSamples": 48,
            },
            reference={"batchSize": 5},
        )
    )
    inputs = load_inputs(job)
    report = precompute_phase.run(inputs)
    assert report["cacheHit"] is False
    table = inputs.ref_cache("train").load()
    ours_c = torch.tensor([table[i][0] for i in range(48)])
    ours_r = torch.tensor([table[i][1] for i in range(48)])
    trl_c, trl_r = trl_reference(
        inputs.splits["train"].rows.remove_columns(["index"]),
        inputs.tokenizer,
        max_length,
        truncation,
    )
    assert (ours_c - trl_c).abs().max().item() <= 1e-5
    assert (ours_r - trl_r).abs().max().item() <= 1e-5
    assert ours_c.abs().min() > 0, "real numbers, not zeros"


def test_precompute_shards_cover_every_row_once(tmp_path):
    job = parse_job(job_doc(tmp_path, reference={"workers": 3}))
    inputs = load_inputs(job)
    cache = inputs.ref_cache("train")
    for shard in (2, 0):
        precompute_phase.run(inputs, shard, 3)
        assert cache.manifest() is None, "a partial cache is never complete"
    precompute_phase.run(inputs, 1, 3)
    assert cache.manifest()["rows"] == 64
    table = cache.load()
    assert len(table) == 64 and np.isfinite(table.chosen).all() and np.isfinite(table.rejected).all()


def causal_lms_alive() -> int:
    from transformers import GenerationMixin

    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, GenerationMixin))


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_training_with_precomputed_logps_never_runs_a_reference_model(tmp_path, lora, monkeypatch):
    spec = {"training": {"maxSteps": 3, "perDeviceBatchSize": 4, "gradientAccumulation": 2}}
    if not lora:
        spec["model"] = {"lora": None}
    job = parse_job(job_doc(tmp_path, **spec))
    inputs = load_inputs(job)
    precompute_phase.run(inputs)
    counts = {}
    original_build = trainers.build

    def build_and_watch(inputs, model, *args, **kwargs):
        trainer = original_build(inputs, model, *args, **kwargs)
        counts["backbone"] = ForwardCounter(model.model)
        counts["models_at_start"] = causal_lms_alive()
        counts["trainer"] = trainer
        return trainer

    monkeypatch.setattr(trainers, "build", build_and_watch)
    report = train_phase.run(inputs)
    trainer, backbone = counts["trainer"], counts["backbone"]
    micro_batches = report["steps"] * 2
    assert trainer.ref_model is None
    assert counts["models_at_start"] == 1, "only the policy model exists while training"
    assert backbone.grad == micro_batches, "exactly one (policy) forward per micro-batch"
    assert backbone.no_grad == 0, "no reference forward (TRL runs it under no_grad)"


def test_trl_without_precompute_does_run_a_reference_forward(tmp_path, monkeypatch):
    """The counter above can see reference passes: TRL's online reference shows up as no-grad forwards."""
    job = parse_job(
        job_doc(
            tmp_path,
            reference={"precompute": False},
            training={"maxSteps": 2, "perDeviceBatchSize": 4},
        )
    )
    inputs = load_inputs(job)
    seen = {}
    original_build = trainers.build

    def build_and_watch(inputs, model, *args, **kwargs):
        trainer = original_build(inputs, model, *args, **kwargs)
        seen["backbone"] = ForwardCounter(model.model)
        return trainer

    monkeypatch.setattr(trainers, "build", build_and_watch)
    train_phase.run(inputs)
    assert seen["backbone"].no_grad == seen["backbone"].grad == 2


def test_stale_cache_fails_fast_naming_the_row(tmp_path):
    from prefops_trainer.core.errors import CacheError

    job = parse_job(job_doc(tmp_path))
    inputs = load_inputs(job)
    precompute_phase.run(inputs)
    cache = inputs.ref_cache("train")
    table = cache.load()
    index = np.arange(len(table))
    cache.write_shard(0, 1, index, table.chosen - 3.0, table.rejected)
    storage.remove(cache.manifest_uri)  # a consistent cache of other numbers (a key collision, a library change)
    cache.finalize(1, len(index), {})
    with pytest.raises(
        CacheError,
        match=r"does not match the model: row \d+ chosen log-prob is .* delete that folder",
    ):
        train_phase.run(inputs)
    assert not Path(inputs.ws.trained.path, TRAINED_MARKER).exists()


def test_the_spot_check_draws_other_rows_each_run_not_the_ones_training_seed_gives_and_names_them(tmp_path, caplog):
    import logging
    import random
    import re

    from prefops_trainer.phases.train.reference import verify_sample

    inputs = load_inputs(parse_job(job_doc(tmp_path, reference={"verifySamples": 8})))
    precompute_phase.run(inputs)
    table, model = inputs.ref_cache("train").load(), inputs.load_model()
    caplog.set_level(logging.INFO, logger="prefops_trainer")
    for _ in range(2):
        assert verify_sample(inputs, model, table) == 8
    drawn = [sorted(map(int, m.split(", "))) for m in re.findall(r"verified on 8 random rows: ([\d, ]+)", caplog.text)]
    assert len(drawn) == 2 and all(len(rows) == 8 for rows in drawn)
    assert drawn[0] != drawn[1], "the same rows twice: the draw is predictable"
    seeded = sorted(random.Random(inputs.spec.training.seed).sample(range(len(table)), 8))
    assert seeded not in drawn, "the rows training.seed gives were checked"
