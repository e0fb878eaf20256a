"""``prefops-trainer sweep`` (local mode) runs the operator's trials and picks the operator's winner
(docs/contract.md §9). The rules are written once (``prefops_trainer.core.rules``, copied into the operator by
scripts/gen_shared_copies.py, which tests/contract/test_planner_contract.py keeps current); what each side adds is
held together here on the same sweep documents: the parsers' rules against the sweep CRD, each side's glue (trial
manifests, error wrapping, the ranking through the operator's state machine) and each side's job parser under the
shared checks."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC
from pathlib import Path

import pytest
import yaml

from prefops_operator.core import sweep_spec as operator_spec
from prefops_operator.core import sweep_trials as operator_trials
from prefops_operator.core.evaluation import Evaluation
from prefops_operator.core.sweep_machine import SweepObserved, decide
from prefops_operator.core.sweep_status import SweepStatus, TrialView
from prefops_trainer.core import sweep as trainer_sweep
from prefops_trainer.core.errors import SpecError
from prefops_trainer.core.rules import sweep_spec as sweep_rules

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = {
    "model": {"source": "hf://org/model", "lora": {"r": 8}},
    "dataset": {"source": "s3://data/prefs/", "evalSplit": "test"},
    "algorithm": {"name": "dpo", "beta": 0.1},
    "training": {"epochs": 1},
    "output": {"uri": "s3://models/sweep/"},
    "storage": {"uri": "s3://work/prefops", "credentialsSecret": "s3-creds"},
    "ttlSecondsAfterFinished": 600,
}


def sweep_doc(name: str = "beta", template: dict | None = None, **spec) -> dict:
    body = {"template": template or TEMPLATE, "objective": {"metric": "rewards/accuracies", "goal": "maximize"}}
    if "parameters" not in spec and "trials" not in spec:
        body["parameters"] = [{"path": "algorithm.beta", "values": [0.05, 0.1, 0.3]}]
    body |= spec
    return {"apiVersion": "prefops.dev/v1alpha1", "kind": "PreferenceTrainingSweep",
            "metadata": {"name": name, "namespace": "team-a"}, "spec": body}  # fmt: skip


def operator_sweep(doc: dict):
    served = copy.deepcopy(doc)
    served["metadata"] |= {"uid": "sweep-uid", "generation": 1, "resourceVersion": "1"}
    return operator_spec.parse_sweep(served)


def example(name: str) -> dict:
    return yaml.safe_load((ROOT / "examples" / name).read_text())


DOCUMENTS = {
    "a grid of two parameters": sweep_doc(parameters=[
        {"path": "algorithm.beta", "values": [0.05, 0.1, 0.3]},
        {"path": "algorithm.lossType", "values": [["sigmoid"], ["ipo"], ["sigmoid", "sft"]]},
    ]),
    "a grid over nested objects the template lacks": sweep_doc(parameters=[
        {"path": "training.deepspeed.stage", "values": [2, 3]},
        {"path": "model.lora", "values": [{"r": 4, "alpha": 8}, {"r": 16}]},
    ]),
    "an explicit list": sweep_doc(trials=[
        {"algorithm.beta": 0.2},
        {"algorithm.lossType": ["ipo"], "training.learningRate": 1e-5},
        {"algorithm.name": "orpo", "reference.workers": 2},
    ]),
    "a name too long for its trials": sweep_doc(name="a-very-long-sweep-name-that-leaves-no-room-for-trial-suffix-x"),
    "the local example": example("local-tiny-sweep.yaml"),
    "the cluster example": example("sweep-dpo-beta-s3.yaml"),
}  # fmt: skip


@pytest.mark.parametrize("doc", DOCUMENTS.values(), ids=DOCUMENTS.keys())
def test_the_local_sweep_runs_the_operators_trial_jobs_without_the_owner(doc):
    ours, theirs = trainer_sweep.parse_sweep(doc), operator_sweep(doc)
    expanded = operator_trials.expand(theirs)
    assert [t.name for t in ours.trials] == [t.name for t in expanded]
    assert all(len(t.name) <= 63 for t in ours.trials) and len({t.name for t in ours.trials}) == len(ours.trials)
    for mine, operators in zip(ours.trials, expanded, strict=True):
        operators_job = operator_trials.trial_manifest(theirs, operators, theirs.spec.suspend)
        assert operators_job["metadata"].pop("ownerReferences")[0]["uid"] == "sweep-uid"
        assert trainer_sweep.trial_manifest(ours, mine) == operators_job


def _sweep_crd_spec() -> dict:
    crd = yaml.safe_load((ROOT / "crds" / "prefops.dev_preferencetrainingsweeps.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]


def test_the_shared_sweep_parser_checks_what_the_sweep_crd_checks():
    crd = _sweep_crd_spec()
    assert crd["parameters"]["items"]["properties"]["path"]["pattern"] == sweep_rules.PATH.pattern
    assert tuple(crd["objective"]["properties"]["goal"]["enum"]) == sweep_rules.GOALS
    assert (crd["parallelism"]["minimum"], crd["parallelism"]["default"]) == (1, 1)
    assert crd["suspend"]["default"] is False


INVALID = {
    "both a grid and a list": sweep_doc(parameters=[{"path": "algorithm.beta", "values": [0.1]}],
                                        trials=[{"algorithm.beta": 0.1}]),
    "a reserved path": sweep_doc(parameters=[{"path": "output.uri", "values": ["s3://x/y"]}]),
    "a path that is not a path": sweep_doc(parameters=[{"path": "algorithm..beta", "values": [0.1]}]),
    "an empty list of values": sweep_doc(parameters=[{"path": "algorithm.beta", "values": []}]),
    "a bad goal": sweep_doc(objective={"metric": "loss", "goal": "best"},
                            parameters=[{"path": "algorithm.beta", "values": [0.1]}]),
    "a grid over 256 trials": sweep_doc(parameters=[{"path": "algorithm.beta", "values": list(range(1, 18))},
                                                    {"path": "training.seed", "values": list(range(16))}]),
}  # fmt: skip


@pytest.mark.parametrize("doc", INVALID.values(), ids=INVALID.keys())
def test_a_sweep_the_operator_refuses_to_parse_is_refused_with_the_same_words(doc):
    with pytest.raises(operator_spec.InvalidSpec) as operators:
        operator_trials.expand(operator_sweep(doc))
    with pytest.raises(SpecError) as ours:
        trainer_sweep.parse_sweep(doc, "sweep.yaml")
    assert str(ours.value) == f"sweep.yaml: {operators.value}"


CHECKED = {
    "an objective one trial's algorithm does not report": sweep_doc(
        objective={"metric": "rewards/accuracies", "goal": "maximize"},
        parameters=[{"path": "algorithm.name", "values": ["dpo", "kto"]}]),
    "a template without an eval split": sweep_doc(
        template={**TEMPLATE, "dataset": {"source": "s3://data/prefs/"}}),
    "overlapping paths": sweep_doc(trials=[{"model.lora": {"r": 4}, "model.lora.r": 8}]),
    "a value the job checks reject": sweep_doc(parameters=[{"path": "algorithm.lossType", "values": [["simpo"]]}]),
}  # fmt: skip


@pytest.mark.parametrize("doc", CHECKED.values(), ids=CHECKED.keys())
def test_the_checks_before_the_first_trial_name_the_operators_problems(doc):
    theirs = operator_sweep(doc)
    operator_says = operator_trials.sweep_problems(theirs, operator_trials.expand(theirs))
    assert operator_says, "the case is one the operator refuses"
    assert trainer_sweep.problems(trainer_sweep.parse_sweep(doc)) == operator_says


RANKINGS = [  # (goal, [(phase, objective) per trial])
    ("maximize", [("Succeeded", 0.7), ("Succeeded", 0.8), ("Succeeded", 0.75)]),
    ("maximize", [("Succeeded", 0.7), ("Failed", 0.9), ("Succeeded", 0.6)]),
    ("maximize", [("Succeeded", 0.8), ("Succeeded", 0.8), ("Succeeded", 0.8)]),
    ("minimize", [("Succeeded", 0.7), ("Succeeded", 0.6), ("Succeeded", 0.6)]),
    ("minimize", [("Succeeded", None), ("Succeeded", 0.9), ("Failed", 0.1)]),
    ("maximize", [("Succeeded", None), ("Succeeded", None), ("Succeeded", None)]),
    ("minimize", [("Failed", 0.5), ("Failed", 0.4), ("Failed", None)]),
]


@pytest.mark.parametrize(("goal", "outcomes"), RANKINGS)
def test_the_local_sweep_names_the_operators_best_trial(goal, outcomes):
    doc = sweep_doc(objective={"metric": "rewards/accuracies", "goal": goal})
    theirs = operator_sweep(doc)
    started = decide(SweepStatus(), SweepObserved(theirs), _now())
    status = replace(started.status, trials=tuple(replace(r, phase="Training") for r in started.status.trials))
    views = {
        f"beta-{i}": TrialView(name=f"beta-{i}", owner_uid="sweep-uid", phase=phase, suspend=False, precompute_done=True,
                               evaluation=Evaluation(200, {"rewards/accuracies": v}, final=True) if v is not None
                               else None)
        for i, (phase, v) in enumerate(outcomes)
    }  # fmt: skip
    operators = decide(status, SweepObserved(theirs, trials=views), _now()).status.best
    ours = trainer_sweep.best(outcomes, trainer_sweep.parse_sweep(doc).objective)
    assert (None if ours is None else f"beta-{ours}") == (None if operators is None else operators.trial)


def _now():
    from datetime import datetime

    return datetime(2026, 1, 1, tzinfo=UTC)
