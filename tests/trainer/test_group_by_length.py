"""``training.groupByLength``: each batch holds rows of about the same length, so less of it is padding, whether TRL
tokenized the rows or they came tokenized from the reference cache (the Trainer drops unused columns before it builds
its sampler, so the lengths come from the token columns themselves)."""

from __future__ import annotations

import json
import random

import pytest
from support.trainer_jobs import TINY, job_doc

from prefops_trainer.adapters import trl_bridge
from prefops_trainer.core.spec import parse_job
from prefops_trainer.inputs import load_inputs
from prefops_trainer.phases import precompute as precompute_phase
from prefops_trainer.phases.train import trainers
from prefops_trainer.phases.train.reference import load_reference, load_tokens

BATCH = 4


def varied(tmp_path) -> str:
    """The tiny pairs with completions one to six times as long: rows of very different lengths."""
    draw, out = random.Random(0), tmp_path / "varied.jsonl"
    rows = [json.loads(line) for line in (TINY / "prefs.jsonl").read_text().splitlines()[:48]]
    with out.open("w") as f:
        for row in rows:
            n = draw.choice([1, 2, 4, 6])
            f.write(json.dumps(row | {k: " ".join([row[k]] * n) for k in ("chosen", "rejected")}) + "\n")
    return str(out)


def trainer_for(tmp_path, name: str, algorithm: str, grouped: bool):
    training = {"perDeviceBatchSize": BATCH, "maxSteps": 2, "groupByLength": grouped, "seed": 5}
    dataset = {"source": varied(tmp_path), "maxLength": 256}
    inputs = load_inputs(parse_job(job_doc(tmp_path, name, algorithm={"name": algorithm}, training=training,
                                           dataset=dataset)))  # fmt: skip
    reference = tokens = None
    if inputs.spec.precompute:
        precompute_phase.run(inputs)
        reference, tokens = load_reference(inputs), load_tokens(inputs)
    config_cls, base = trainers.classes(inputs.spec)
    from prefops_trainer.core.trlconfig import Runtime, trl_kwargs

    kwargs = trl_kwargs(inputs.spec, Runtime(cuda=False, dtype="float32"), str(tmp_path / name / "ckpt"),
                        precompute=reference is not None)  # fmt: skip
    args = config_cls(**kwargs)
    return trainers.build(inputs, inputs.load_model(), args, base, reference, tmp_path / name / "ckpt", tokens)


def padding(trainer) -> tuple[int, list[list[int]]]:
    """Pad tokens of an epoch drawn by the trainer's own sampler (each batch padded to its longest row), and its
    batches' lengths."""
    dataset = trainer._remove_unused_columns(trainer.train_dataset)
    lengths = trl_bridge.token_lengths(dataset)
    order = list(trainer._get_train_sampler(dataset))
    batches = [[lengths[i] for i in order[k : k + BATCH]] for k in range(0, len(order), BATCH)]
    return sum(max(b) * len(b) - sum(b) for b in batches), batches


@pytest.mark.parametrize("algorithm", ["dpo", "kto", "orpo"])  # cached tokens (DPO, KTO), TRL's own (ORPO)
def test_grouped_batches_hold_rows_of_about_the_same_length_and_pad_less(tmp_path, algorithm):
    grouped, batches = padding(trainer_for(tmp_path, "grouped", algorithm, True))
    random, drawn = padding(trainer_for(tmp_path, "random", algorithm, False))
    assert grouped < random / 2, f"pad tokens an epoch: {grouped} grouped, {random} random"
    rows = [n for b in batches for n in b]
    runs = [rows[k : k + 12] for k in range(0, 48, 12)]  # 48 rows of batch 4: 4 runs of 3 batches (at most 50)
    assert rows[0] == max(rows), "the longest row first: an out-of-memory shows at once"
    assert all(run[1:] == sorted(run[1:], reverse=True) for run in runs), "each run sorted by length"
    assert [n for b in drawn for n in b] != rows, "without it the order is TRL's random one"
    assert sorted(rows) == sorted(n for b in drawn for n in b), "the same rows, each once"
