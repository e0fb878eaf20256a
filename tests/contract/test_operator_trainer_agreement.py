"""The operator and the trainer share no code; they agree on data: the algorithm registry, the environment
variables of docs/contract.md §3, the exit code meaning "the input is wrong", the metrics the operator scrapes,
and the verdict on algorithm settings."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from support import trainer_metrics as fake_trainer_metrics

from prefops_operator.core import children
from prefops_operator.core.algorithms import ALGORITHMS as OPERATOR_ALGORITHMS
from prefops_operator.core.algorithms import AlgorithmRule
from prefops_operator.core.machine import PERMANENT_EXIT_CODE
from prefops_operator.core.progress import PRECOMPUTE_METRICS, TRAINING_METRICS
from prefops_operator.core.spec import parse_job as operator_parse
from prefops_operator.core.validation import semantic_problems
from prefops_trainer.adapters import metrics as trainer_metrics
from prefops_trainer.core.algorithms import ALGORITHMS as TRAINER_ALGORITHMS
from prefops_trainer.core.algorithms import Algorithm as TrainerAlgorithm
from prefops_trainer.core.errors import SpecError, UserError
from prefops_trainer.core.spec import parse_job as trainer_parse

ROOT = Path(__file__).resolve().parents[2]


def test_both_sides_describe_every_algorithm_with_the_same_data():
    """Every field of the operator's table is a field of the trainer's, with the same value for every algorithm."""
    shared = [f.name for f in dataclasses.fields(AlgorithmRule)]
    assert set(shared) <= {f.name for f in dataclasses.fields(TrainerAlgorithm)}
    operator_side = {name: {f: getattr(rule, f) for f in shared} for name, rule in OPERATOR_ALGORITHMS.items()}
    trainer_side = {name: {f: getattr(algo, f) for f in shared} for name, algo in TRAINER_ALGORITHMS.items()}
    assert operator_side == trainer_side


def contract_env_names() -> set[str]:
    text = (ROOT / "docs" / "contract.md").read_text()
    section = text.split("## 3.")[1].split("\n## ")[0]
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", section, re.M))  # every name but the `AWS_*` of envFrom


def test_the_operator_sets_exactly_the_environment_variables_of_the_contract():
    set_by_operator = {v for k, v in vars(children).items() if k.startswith("ENV_")}
    assert set_by_operator == contract_env_names()


def test_exit_code_75_means_interrupted_resume_me_on_both_sides():
    from prefops_operator.core.restarts import INTERRUPTED_EXIT_CODE
    from prefops_trainer.core.errors import Interrupted

    assert Interrupted.exit_code == INTERRUPTED_EXIT_CODE == 75
    section = (ROOT / "docs" / "contract.md").read_text().split("## 4.")[1].split("\n## ")[0]
    assert f"| {Interrupted.exit_code} | interrupted, resume me:" in section


def test_exit_code_2_means_the_same_on_both_sides():
    assert UserError.exit_code == PERMANENT_EXIT_CODE == 2


def test_the_metrics_the_operator_scrapes_are_the_ones_the_trainer_serves():
    served = {f"prefops_trainer_{name}" for name in trainer_metrics.HELP}
    assert set(TRAINING_METRICS.values()) | set(PRECOMPUTE_METRICS.values()) <= served


def test_the_operator_tests_fake_trainer_endpoint_labels_samples_as_the_trainer_does():
    assert fake_trainer_metrics.LABELS == trainer_metrics.LABELS


LOSS_CHOICES = [
    {},
    {"lossType": ["sigmoid"]},
    {"lossType": ["ipo"]},
    {"lossType": ["simpo"]},
    {"lossType": ["orpo"]},
    {"lossType": ["alphapo"]},
    {"lossType": ["kto"]},
    {"lossType": ["apo_zero_unpaired"]},
    {"lossType": ["sigmoid", "sft"]},
    {"lossType": ["sigmoid", "sft"], "lossWeights": [1.0, 0.2]},
    {"lossType": ["hinge"], "lossWeights": [1.0, 2.0]},
    {"lossType": ["exo_pair"]},
    {"lossType": ["exo_pair"], "labelSmoothing": 0.001},
    {"beta": 0},
]
ALGORITHM_CASES = [{"name": name, **extra} for name in TRAINER_ALGORITHMS for extra in LOSS_CHOICES]
SPEC_CASES = [
    {},
    {"reference": {"precompute": True}},
    {"reference": {"precompute": False}},
    {"rewardModel": {"source": "hf://org/reward"}},
    {"rewardModel": {"source": "hf://org/reward"}, "generation": {"maxNewTokens": 16}},
    {"generation": {"temperature": 0.7}},
    {"dataset": {"source": "s3://d/p", "truncationMode": "keep_end"}},
    *(
        {"rewardModel": {"source": "hf://org/reward"}, "training": {"deepspeed": {"stage": stage}}, **lora}
        for stage in (2, 3)
        for lora in ({}, {"model": {"source": "hf://a/b", "lora": {"r": 8}}})
    ),
    *(
        {
            "output": {"uri": "s3://o/m", "gate": gate},
            **({"dataset": {"source": "s3://d/p", "evalSplit": "test"}} if split else {}),
        }
        for gate, split in (
            ({"metric": "rewards/accuracies", "min": 0.6}, False),
            ({"metric": "loss", "max": 0.5}, True),
            ({"metric": "log_odds_ratio", "min": 0, "max": 1}, True),
            ({"metric": "kl"}, True),
        )
    ),
]


@pytest.mark.parametrize("extra", SPEC_CASES, ids=lambda e: "-".join(e) or "plain")
@pytest.mark.parametrize("algorithm", ALGORITHM_CASES, ids=lambda a: "-".join(f"{k}={v}" for k, v in a.items()))
def test_operator_and_trainer_agree_on_which_algorithm_settings_are_invalid(algorithm, extra):
    spec = {"model": {"source": "hf://a/b"}, "dataset": {"source": "s3://d/p"}, "algorithm": algorithm,
            "output": {"uri": "s3://o/m"}, "storage": {"uri": "s3://w/x"}, **extra}  # fmt: skip
    doc = {
        "apiVersion": "prefops.dev/v1alpha1",
        "kind": "PreferenceTrainingJob",
        "metadata": {"name": "j"},
        "spec": spec,
    }
    operator_says = "; ".join(semantic_problems(operator_parse(doc).spec))
    try:
        trainer_parse(doc)
        trainer_says = ""
    except SpecError as e:
        trainer_says = str(e)
    assert operator_says == trainer_says
