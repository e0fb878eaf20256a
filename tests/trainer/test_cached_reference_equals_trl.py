"""Training with our cached reference gives TRL's own numbers, loss type by loss type.

For every DPO loss type TRL 1.16 accepts, weighted combinations, and KTO, the first three optimizer steps of a
prefops train phase (reference log-probs read from the cache our precompute phase wrote) log the same loss,
``rewards/chosen``, ``rewards/rejected`` and ``rewards/margins`` as TRL's own trainer computing its reference
online, on the same rows, order and seed: within 1e-5 in float32.

Our DPO side trains on the tokens the precompute phase kept in the cache (TRL's tokenization, run once); TRL's side
tokenizes the rows itself. What this catches: tokens or a cache row joined to the wrong pair, a reference from another model or truncation, a loss fed
the wrong log-probs. At step 1 the policy *is* the reference (full fine-tuning), so TRL's rewards are exactly zero
and any wrong reference shows as rewards of the size of a log-prob; steps 2 and 3 check the numbers on weights the
earlier steps moved.

Why a small learning rate: our reference and TRL's online one agree to ~1e-6 (float32 over different batch
shapes), not bit for bit. At step 1 Adam divides each gradient entry by its own magnitude, so for entries whose
gradient is near zero a 1e-6 relative difference decides the sign of a full learning-rate step. At 1e-2 that turns
the last float digits into 1e-3 differences by step 2 (TRL's own precompute shows the same against TRL online);
at 1e-5 the steps still move the rewards by ~1e-2 while that noise stays below 1e-6.

The TRL side is recomputed here: it loads the rows into a datasets cache of its own (this test's folder), so
nothing an earlier run left on disk can answer for it. One precompute serves every DPO loss type, as in a sweep.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.trainer_jobs import TINY, job_doc

from prefops_trainer.adapters.refcache import RefTable
from prefops_trainer.core.algorithms import DPO_LOSS_TYPES
from prefops_trainer.core.spec import parse_job
from prefops_trainer.inputs import load_inputs
from prefops_trainer.phases import precompute as precompute_phase
from prefops_trainer.phases import train as train_phase
from prefops_trainer.phases.train import phase as train_flow
from prefops_trainer.phases.train import trainers

STEPS = 3
BATCH = 4
ROWS = 24
SEED = 7
LR = 1e-5  # see the module docstring
COMPARED = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins")
#: Absolute for values up to 1, relative above: float32 resolves a log-prob sum near -50 only to 4e-6, and
#: sppo_hard's loss squares unscaled log-ratios (its step-2 loss, 1.95, differs by 1.2e-5 = 6e-6 relative).
TOLERANCE = 1e-5


def dpo(loss_types: tuple[str, ...], weights: tuple[float, ...] | None = None) -> dict:
    algorithm: dict = {"name": "dpo", "lossType": list(loss_types), "beta": 0.5}
    if weights:
        algorithm["lossWeights"] = list(weights)
    if {"exo_pair", "robust", "aot", "aot_unpaired"} & set(loss_types):
        algorithm["labelSmoothing"] = 0.1
    return algorithm


def spec_for(tmp, algorithm: dict, lora: bool) -> dict:
    return {
        "model": {"lora": {"r": 4, "alpha": 8, "dropout": 0.0} if lora else None},
        "dataset": {"source": str(TINY / "prefs.jsonl"), "maxLength": 64, "maxSamples": ROWS},
        "algorithm": algorithm,
        "training": {
            "maxSteps": STEPS,
            "learningRate": LR * 10 if lora else LR,  # LoRA's B starts at zero: it moves the model less per step
            "lrScheduler": "constant",
            "perDeviceBatchSize": BATCH,
            "seed": SEED,
            "checkpointEverySteps": 1000,
        },
        "reference": {"batchSize": 5},
        "storage": {"uri": str(tmp / "work")},
    }


def ours(tmp, name: str, spec: dict, monkeypatch) -> list[dict]:
    """Our train phase's per-step logs; the reference log-probs come from the cache, never from a model."""
    inputs = load_inputs(parse_job(job_doc(tmp, name, **spec)))
    precompute_phase.run(inputs)  # a hit after the first DPO case: every loss type reads one cache
    original = trainers.build

    def checked_build(*args, **kwargs):
        trainer = original(*args, **kwargs)
        assert trainer.ref_model is None and trainer.precompute_ref_logps, "no reference model: the cache answers"
        return trainer

    monkeypatch.setattr(trainers, "build", checked_build)
    report = train_phase.run(inputs)
    assert report["steps"] == STEPS
    assert report["tokenizedBy"] == "precompute", "DPO and KTO train on the cache's tokens"
    return report["logHistory"]


def trl_online(tmp, spec: dict, monkeypatch) -> list[dict]:
    """TRL's own trainer on the same rows, order and seed, with its reference computed online (no precompute)."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefops_trainer.core.trlconfig import Runtime, lora_kwargs, trl_kwargs

    cache = tmp / "trl-datasets-cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    job = parse_job(job_doc(tmp, "trl", **spec))
    family = job.spec.algorithm.info.family
    rows = datasets.load_dataset("json", data_files=spec["dataset"]["source"], split="train", cache_dir=str(cache))
    assert rows.cache_files and rows.cache_files[0]["filename"].startswith(str(cache)), "TRL's own datasets cache"
    rows = rows.select(range(ROWS))
    if family == "kto":
        from trl.data_utils import unpair_preference_dataset

        rows = unpair_preference_dataset(rows)
    kwargs = trl_kwargs(job.spec, Runtime(cuda=False, dtype="float32"), str(tmp / "trl-out"), precompute=False)
    kwargs |= {"save_strategy": "no"}
    config_cls, trainer_cls = trainers.classes(job.spec)
    peft_config = None
    if (lk := lora_kwargs(job.spec)) is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(**lk)
    trainer = trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(TINY / "model", dtype=torch.float32),
        args=config_cls(**kwargs),
        train_dataset=rows,
        processing_class=AutoTokenizer.from_pretrained(TINY / "model"),
        peft_config=peft_config,
    )
    assert not trainer.args.precompute_ref_log_probs
    assert peft_config is not None or trainer.ref_model is not None, "TRL runs a second, reference model"
    trainer.train()
    return [h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]


def assert_same_steps(mine: list[dict], theirs: list[dict], keys: tuple[str, ...]) -> None:
    assert len(mine) == len(theirs) == STEPS
    for step, (a, b) in enumerate(zip(mine, theirs, strict=True), start=1):
        for key in keys:
            assert (key in a) == (key in b), f"step {step}: {key} logged by one side only"
            if key in b:
                bound = TOLERANCE * max(1.0, abs(b[key]))
                assert abs(a[key] - b[key]) <= bound, f"step {step} {key}: prefops {a[key]!r}, TRL {b[key]!r}"
    assert len({h["loss"] for h in theirs}) == STEPS, "the steps trained (the loss changed from step to step)"
    rewards = [abs(h[k]) for h in theirs[1:] for k in ("rewards/chosen", "rewards/rejected") if k in h]
    assert max(rewards) > 100 * TOLERANCE, "steps 2 and 3 compare real rewards, far above the tolerance"


CASES = [(dpo((t,)), False) for t in DPO_LOSS_TYPES] + [
    (dpo(("sigmoid", "sft"), (1.0, 0.5)), False),
    (dpo(("sigmoid", "ipo", "bco_pair"), (0.6, 0.3, 0.1)), True),
    ({"name": "kto", "beta": 0.5, "undesirableWeight": 1.5}, False),
    ({"name": "kto", "lossType": ["apo_zero_unpaired"], "beta": 0.5}, False),
]


def case_id(algorithm: dict, lora: bool) -> str:
    name = "+".join(algorithm.get("lossType") or [algorithm["name"]])
    return name + ("-weighted" if "lossWeights" in algorithm else "") + ("-lora" if lora else "")


@pytest.mark.parametrize(("algorithm", "lora"), CASES, ids=[case_id(*c) for c in CASES])
def test_first_steps_with_the_cached_reference_equal_trl_online(tmp_path_factory, monkeypatch, algorithm, lora):
    tmp = tmp_path_factory.getbasetemp() / "cached-reference-equals-trl"  # one shared cache, as in a sweep
    tmp.mkdir(exist_ok=True)
    spec = spec_for(tmp, algorithm, lora)
    name = case_id(algorithm, lora).replace("_", "-").replace("+", "-")
    mine = ours(tmp, name, spec, monkeypatch)
    theirs = trl_online(tmp / name, spec, monkeypatch)
    keys = (*COMPARED, "kl") if algorithm["name"] == "kto" and "lossType" not in algorithm else COMPARED
    assert_same_steps(mine, theirs, keys)


def test_a_cache_joined_to_the_wrong_rows_fails_the_comparison(tmp_path, monkeypatch):
    """The comparison above can fail: the same cache, joined one row off, gives step-1 rewards far from TRL's."""
    original = train_flow.load_reference

    def shifted(inputs):
        tables = original(inputs)
        return {split: RefTable(np.roll(t.chosen, -1), np.roll(t.rejected, -1)) for split, t in tables.items()}

    spec = spec_for(tmp_path, dpo(("sigmoid",)), lora=False)
    theirs = trl_online(tmp_path / "trl", spec, monkeypatch)
    monkeypatch.setattr(train_flow, "load_reference", shifted)
    spec["reference"]["verifySamples"] = 0  # the train phase's own spot check would catch it first
    mine = ours(tmp_path, "shifted", spec, monkeypatch)
    with pytest.raises(AssertionError, match=r"step 1 loss: prefops"):
        assert_same_steps(mine, theirs, COMPARED)
