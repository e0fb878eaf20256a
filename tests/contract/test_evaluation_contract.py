"""The evaluation, gate and sweep contract (docs/contract.md §7-§9) between the operator and the trainer:

- the operator's evaluation metrics per algorithm are what TRL's trainers really log when they evaluate (TRL run
  here on the tiny model), and the CRDs and the contract document list the same names;
- the operator's reference groups never put together two jobs whose trainer reference-cache keys differ, and do
  group jobs that differ only in fields the key ignores (the trainer's own key, computed on the tiny model and
  data);
- the trainer serves the eval gauges, knows the same metrics per algorithm and rejects a gate with the operator's
  words.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from pathlib import Path

import pytest
import yaml

from prefops_operator.core.algorithms import ALGORITHMS, ALL_EVAL_METRICS
from prefops_operator.core.evaluation import gauge_name
from prefops_operator.core.sweep_trials import reference_group

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "examples" / "tiny"
JOB_CRD = yaml.safe_load((ROOT / "crds" / "prefops.dev_preferencetrainingjobs.yaml").read_text())
SWEEP_CRD = yaml.safe_load((ROOT / "crds" / "prefops.dev_preferencetrainingsweeps.yaml").read_text())
#: TRL keys of an evaluation that are not results: timings, and the training token count
NOT_RESULTS = {"runtime", "samples_per_second", "steps_per_second", "model_preparation_time", "num_tokens", "epoch"}


def _schema(crd: dict, path: str) -> dict:
    node = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in path.split("."):
        node = node["properties"][part]
    return node


# -- metric names ------------------------------------------------------------------------------------------------


def _trl_eval_keys(family: str) -> set[str]:
    """The keys TRL's trainer of ``family`` returns from ``evaluate()`` on 16 pairs of the tiny data."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TINY / "model")
    tok.pad_token = tok.pad_token or tok.eos_token
    rows = [json.loads(line) for line in (TINY / "prefs.jsonl").read_text().splitlines()[:16]]
    data = datasets.Dataset.from_list(rows)
    model = AutoModelForCausalLM.from_pretrained(TINY / "model", dtype=torch.float32)
    args = {"output_dir": "/tmp/prefops-eval-contract", "per_device_eval_batch_size": 8, "report_to": [],
            "max_length": 64, "use_cpu": True}  # fmt: skip
    if family == "dpo":
        from trl import DPOConfig as Config
        from trl import DPOTrainer as Trainer
    elif family == "cpo":
        from trl.experimental.cpo import CPOConfig as Config
        from trl.experimental.cpo import CPOTrainer as Trainer
    elif family == "orpo":
        from trl.experimental.orpo import ORPOConfig as Config
        from trl.experimental.orpo import ORPOTrainer as Trainer
    else:
        from trl import KTOConfig as Config
        from trl import KTOTrainer as Trainer
        from trl.data_utils import unpair_preference_dataset

        data = unpair_preference_dataset(data).shuffle(seed=0)  # batches with both kinds: rewards/margins
    trainer = Trainer(model=model, args=Config(**args), train_dataset=data, eval_dataset=data, processing_class=tok)
    keys = {k.removeprefix("eval_") for k in trainer.evaluate() if k.startswith("eval_")}
    return keys - NOT_RESULTS


FAMILIES = {"dpo": ["dpo"], "cpo": ["cpo", "simpo", "cpo-simpo", "alphapo"], "orpo": ["orpo"], "kto": ["kto"]}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_evaluation_metrics_of_each_algorithm_are_what_trls_trainer_logs_when_it_evaluates(family):
    logged = _trl_eval_keys(family)
    for name in FAMILIES[family]:
        assert set(ALGORITHMS[name].eval_metrics) == logged, name


def test_online_dpo_has_no_evaluation_metrics_and_every_other_algorithm_has_some():
    assert {n for n, rule in ALGORITHMS.items() if not rule.eval_metrics} == {"online-dpo"}
    assert {n for names in FAMILIES.values() for n in names} | {"online-dpo"} == set(ALGORITHMS)


def test_the_gate_and_the_objective_accept_exactly_the_evaluation_metrics_of_some_algorithm():
    assert _schema(JOB_CRD, "spec.output.gate.metric")["enum"] == list(ALL_EVAL_METRICS)
    assert _schema(SWEEP_CRD, "spec.objective.metric")["enum"] == list(ALL_EVAL_METRICS)
    assert _schema(SWEEP_CRD, "spec.template.output.gate.metric")["enum"] == list(ALL_EVAL_METRICS)


def test_the_contract_document_lists_the_operators_evaluation_metrics():
    section = (ROOT / "docs" / "contract.md").read_text().split("## 7.")[1].split("\n## ")[0]
    documented = {}
    for names, metrics in re.findall(r"^\| ((?:`[a-z-]+`(?:, )?)+) \| `\w+` \| (.+) \|$", section, re.M):
        listed = set(re.findall(r"`([a-z_/]+)`", metrics.split(" (")[0]))
        documented |= {name: listed for name in re.findall(r"`([a-z-]+)`", names)}
    assert documented == {name: set(rule.eval_metrics) for name, rule in ALGORITHMS.items()}


def test_eval_gauge_names_are_prometheus_names_and_distinct():
    names = [gauge_name(m) for m in ALL_EVAL_METRICS]
    assert all(re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", n) for n in names)
    assert len(set(names)) == len(names) and "prefops_trainer_eval_step" not in names


# -- the reference cache key -------------------------------------------------------------------------------------

BASE = {
    "model": {"source": str(TINY / "model"), "dtype": "float32"},
    "dataset": {"source": str(TINY / "prefs.jsonl"), "maxLength": 64, "maxSamples": 32},
    "algorithm": {"name": "dpo"},
    "training": {"perDeviceBatchSize": 4},
    "output": {"uri": "/tmp/prefops-contract/out"},
    "storage": {"uri": "/tmp/prefops-contract/work"},
}
#: variation → spec changes; the first group never changes the trainer's key, the second always does
IGNORED = {
    "beta": {"algorithm": {"beta": 0.3}},
    "loss type": {"algorithm": {"lossType": ["ipo"]}},
    "learning rate": {"training": {"learningRate": 1e-4}},
    "batch size (dpo)": {"training": {"perDeviceBatchSize": 8}},
    "lora": {"model": {"lora": {"r": 4}}},
    "seed": {"training": {"seed": 7}},
}
READ = {
    "model": {"model": {"source": str(TINY / "reward-model")}},
    "dtype": {"model": {"dtype": "bfloat16"}},
    "dataset": {"dataset": {"source": str(TINY / "prefs-chat.jsonl")}},
    "maxLength": {"dataset": {"maxLength": 48}},
    "maxSamples": {"dataset": {"maxSamples": 24}},
    "truncationMode": {"dataset": {"truncationMode": "keep_end"}},
    "kto": {"algorithm": {"name": "kto"}},
    "kto batch": {"algorithm": {"name": "kto"}, "training": {"perDeviceBatchSize": 8}},
    "kto apo": {"algorithm": {"name": "kto", "lossType": ["apo_zero_unpaired"]}},
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[frozenset[str], str | None]]:
    """Variation → (the trainer's reference-cache keys of every split, the operator's reference group)."""
    from prefops_trainer.core.spec import parse_job
    from prefops_trainer.inputs import load_inputs

    out = {}
    for name, change in {"base": {}, **IGNORED, **READ}.items():
        spec = _merge(BASE, change)
        job = parse_job({"apiVersion": "prefops.dev/v1alpha1", "kind": "PreferenceTrainingJob",
                         "metadata": {"name": "k"}, "spec": spec})  # fmt: skip
        inputs = load_inputs(job)
        trainer = frozenset(inputs.ref_cache(split).key for split in inputs.splits)
        out[name] = (trainer, reference_group(spec))
    return out


def test_jobs_the_operator_groups_together_share_the_trainers_reference_cache_key(keys):
    for (a, (key_a, group_a)), (b, (key_b, group_b)) in itertools.combinations(keys.items(), 2):
        if group_a == group_b:
            assert key_a == key_b, f"{a} and {b}: one operator group, different trainer cache keys"


def test_fields_the_trainers_key_ignores_keep_a_trial_in_the_first_trials_group(keys):
    for name in IGNORED:
        assert keys[name] == keys["base"], name


def test_every_field_the_trainers_key_reads_separates_the_groups(keys):
    for name in READ:
        assert keys[name][0] != keys["base"][0], f"{name}: the trainer's key does not read it (fix the table)"
        assert keys[name][1] != keys["base"][1], name


# -- the trainer side --------------------------------------------------------------------------------------------


def test_the_trainer_serves_an_eval_gauge_for_every_evaluation_metric_and_the_eval_step():
    from prefops_trainer.adapters import metrics

    served = {f"prefops_trainer_{name}" for name in metrics.HELP}
    assert {gauge_name(m) for m in ALL_EVAL_METRICS} | {"prefops_trainer_eval_step"} <= served


def test_the_trainer_knows_the_same_evaluation_metrics_per_algorithm():
    from prefops_trainer.core.algorithms import ALGORITHMS as TRAINER

    assert {n: set(a.eval_metrics) for n, a in TRAINER.items()} == {
        n: set(r.eval_metrics) for n, r in ALGORITHMS.items()
    }


def test_the_trainer_rejects_a_gate_like_the_operator():
    from prefops_operator.core.spec import parse_job as operator_parse
    from prefops_operator.core.validation import semantic_problems
    from prefops_trainer.core.errors import SpecError
    from prefops_trainer.core.spec import parse_job as trainer_parse

    doc = {"apiVersion": "prefops.dev/v1alpha1", "kind": "PreferenceTrainingJob", "metadata": {"name": "j"},
           "spec": _merge(BASE, {"algorithm": {"name": "kto"}, "output": {"uri": "s3://o/m", "gate": {
               "metric": "rewards/accuracies", "min": 0.5, "max": 0.9}}, "storage": {"uri": "s3://w/x"},
               "model": {"source": "hf://a/b"}, "dataset": {"source": "s3://d/p"}})}  # fmt: skip
    operator_says = "; ".join(semantic_problems(operator_parse(doc).spec))
    with pytest.raises(SpecError) as caught:
        trainer_parse(doc)
    assert str(caught.value) == operator_says
