"""Every algorithm and every DPO loss type TRL accepts trains through prefops, with finite losses."""

import math
import re

import pytest
from support.trainer_jobs import TINY, job_doc

from prefops_trainer.core.algorithms import ALGORITHMS, DPO_LOSS_TYPES
from prefops_trainer.core.spec import parse_job
from prefops_trainer.core.trlconfig import TRL_TRAINERS, Runtime, trl_kwargs
from prefops_trainer.inputs import load_inputs
from prefops_trainer.phases import precompute as precompute_phase
from prefops_trainer.phases import train as train_phase


def test_dpo_loss_registry_matches_trl():
    from trl import DPOConfig

    help_text = DPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    trl_losses = re.findall(r"`'([a-z_]+)'`", help_text.split("If multiple")[0])
    assert tuple(trl_losses) == DPO_LOSS_TYPES


def test_cpo_loss_registry_matches_trl():
    from trl.experimental.cpo import CPOConfig

    choices = set(CPOConfig.__dataclass_fields__["loss_type"].metadata["choices"])
    ours = {t for a in ALGORITHMS.values() if a.family == "cpo" for t in a.loss_types}
    assert ours == choices


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_each_algorithm_names_a_trl_trainer_whose_config_takes_every_argument_we_pass(tmp_path, name):
    import dataclasses
    import importlib

    from transformers import Trainer

    extra = {"rewardModel": {"source": str(TINY / "reward-model")}} if ALGORITHMS[name].online else {}
    spec = parse_job(job_doc(tmp_path, algorithm={"name": name}, **extra)).spec
    trl = TRL_TRAINERS[ALGORITHMS[name].family]
    module = importlib.import_module(trl.module)
    config, trainer = getattr(module, trl.config), getattr(module, trl.trainer)
    assert issubclass(trainer, Trainer)
    runtime = Runtime(cuda=False, dtype="float32")
    passed = trl_kwargs(spec, runtime, str(tmp_path), precompute=spec.precompute)
    assert set(passed) <= {f.name for f in dataclasses.fields(config)}, name


def train(tmp_path, **spec):
    job = parse_job(job_doc(tmp_path, **spec))
    inputs = load_inputs(job)
    if job.spec.precompute:
        precompute_phase.run(inputs)
    return train_phase.run(inputs)


def loss_history(report):
    return [h["loss"] for h in report["logHistory"]]


@pytest.mark.parametrize("loss_type", DPO_LOSS_TYPES)
def test_every_dpo_loss_type_trains(tmp_path, loss_type):
    algorithm = {"name": "dpo", "lossType": [loss_type]}
    if loss_type in ("exo_pair", "robust"):
        algorithm["labelSmoothing"] = 0.01
    report = train(tmp_path, algorithm=algorithm, training={"maxSteps": 3})
    losses = loss_history(report)
    assert report["steps"] == 3 and len(losses) == 3
    assert all(math.isfinite(x) for x in losses)


def test_weighted_loss_combination_matches_its_parts(tmp_path):
    """sigmoid + 0.5·sft (RPO / pref_ftx): the first step's loss is the weighted sum of the parts' losses."""
    steps = {"maxSteps": 1, "learningRate": 1e-9}
    sig = loss_history(
        train(
            tmp_path / "a",
            algorithm={"name": "dpo", "lossType": ["sigmoid"]},
            training=steps,
        )
    )
    sft = loss_history(
        train(
            tmp_path / "b",
            algorithm={"name": "dpo", "lossType": ["sft"]},
            training=steps,
        )
    )
    both = loss_history(
        train(
            tmp_path / "c",
            algorithm={
                "name": "dpo",
                "lossType": ["sigmoid", "sft"],
                "lossWeights": [1.0, 0.5],
            },
            training=steps,
        )
    )
    assert both[0] == pytest.approx(sig[0] + 0.5 * sft[0], rel=1e-4)


@pytest.mark.parametrize(
    "algorithm",
    [
        {"name": "cpo"},
        {"name": "cpo", "lossType": ["hinge"]},
        {"name": "cpo", "lossType": ["ipo"]},
        {"name": "simpo", "beta": 2.0, "simpoGamma": 0.5},
        {"name": "cpo-simpo", "beta": 2.0},
        {"name": "alphapo", "beta": 2.0, "alpha": 0.25},
        {"name": "orpo"},
    ],
    ids=["cpo", "cpo-hinge", "cpo-ipo", "simpo", "cpo-simpo", "alphapo", "orpo"],
)
def test_reference_free_algorithms_train(tmp_path, algorithm):
    report = train(tmp_path, algorithm=algorithm, training={"maxSteps": 3})
    assert report["steps"] == 3
    assert all(math.isfinite(x) for x in loss_history(report))
    assert not (tmp_path / "work" / "refcache").exists(), "reference-free: no precompute ran"


def test_full_fine_tuning_trains_every_weight(tmp_path):
    report = train(tmp_path, model={"lora": None}, training={"maxSteps": 2})
    assert report["steps"] == 2
    from pathlib import Path

    trained = Path(tmp_path / "work").rglob("trained/model.safetensors")
    assert list(trained), "full fine-tuning hands full weights (not an adapter) to export"
