"""The local sweep (`prefops-trainer sweep examples/local-tiny-sweep.yaml`): the trials run one after another on the
shared reference cache, the table names the best trial by the final objective, and sweep.json and sweep.png are
written. (That its trials and ranking are the operator's: tests/contract/test_sweep_contract.py.)"""

import json
import shutil

import pytest
import yaml
from support.trainer_jobs import ROOT, error_of, run_cli

from prefops_trainer.core.sweep import parse_sweep


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    shutil.copytree(ROOT / "examples", tmp / "examples")
    return tmp, run_cli("sweep", "examples/local-tiny-sweep.yaml", cwd=tmp)


def test_the_local_sweep_runs_every_trial_and_later_trials_hit_the_reference_cache(swept):
    tmp, result = swept
    assert result.returncode == 0, result.stderr[-3000:]
    doc = yaml.safe_load((tmp / "examples" / "local-tiny-sweep.yaml").read_text())
    trials = parse_sweep(doc).trials
    table = json.loads((tmp / "out" / "sweep" / "sweep.json").read_text())
    assert (
        [t["name"] for t in table["trials"]] == [t.name for t in trials] == [f"local-tiny-sweep-{i}" for i in range(3)]
    )
    assert [t["phase"] for t in table["trials"]] == ["Succeeded"] * 3
    assert [t["cacheHit"] for t in table["trials"]] == [False, True, True]
    keys = set()
    for trial, row in zip(trials, table["trials"], strict=True):
        manifest = json.loads((tmp / "out" / "sweep" / trial.name / "prefops.json").read_text())
        assert row["parameters"] == trial.parameters
        assert manifest["lineage"]["spec"]["training"]["learningRate"] == trial.parameters["training.learningRate"]
        assert row["objective"] == manifest["evaluation"]["metrics"]["rewards/accuracies"]
        assert row["step"] == manifest["evaluation"]["step"]
        keys.add(json.dumps(manifest["lineage"]["referenceCache"], sort_keys=True))
    assert len(keys) == 1, "every trial read the same reference cache"


def test_the_best_trial_is_the_one_with_the_best_final_objective_and_is_marked(swept):
    tmp, result = swept
    table = json.loads((tmp / "out" / "sweep" / "sweep.json").read_text())
    values = [t["objective"] for t in table["trials"]]
    best = values.index(max(values))  # maximize; a tie goes to the earlier trial
    assert table["best"] == f"local-tiny-sweep-{best}"
    assert [t["best"] for t in table["trials"]] == [i == best for i in range(3)]
    marked = [line for line in result.stdout.splitlines() if line.strip().startswith("*")]
    assert len(marked) == 1 and f"local-tiny-sweep-{best}" in marked[0]
    assert f"best: local-tiny-sweep-{best} (training.learningRate=" in result.stdout
    assert (tmp / "out" / "sweep" / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_invalid_sweep_is_refused_naming_the_field_before_any_trial_runs(tmp_path):
    doc = yaml.safe_load((ROOT / "examples" / "local-tiny-sweep.yaml").read_text())
    doc["spec"]["objective"]["metric"] = "kl"
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = run_cli("sweep", path, cwd=tmp_path)
    assert result.returncode == 2
    assert (
        "spec.template.algorithm.name: algorithm 'dpo' does not report the objective's metric 'kl' "
        "(spec.objective.metric)" in result.stderr
    )
    assert not (tmp_path / "out").exists()


def test_a_sweep_with_credentials_in_an_override_is_refused_without_repeating_them(tmp_path):
    doc = yaml.safe_load((ROOT / "examples" / "local-tiny-sweep.yaml").read_text())
    secret = "wJalrXUtnFEMIEXAMPLESECRET"
    values = [f"s3://AKIAEXAMPLEKEY:{secret}@bucket/m", f"s3:///AKIAEXAMPLEKEY:{secret}@b/m",
              f"s3:/AKIAEXAMPLEKEY:{secret}@b/m"]  # fmt: skip
    doc["spec"]["parameters"] = [{"path": "model.source", "values": values}]
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = run_cli("sweep", path, cwd=tmp_path)
    assert result.returncode == 2
    for i in range(3):
        assert f"spec.parameters[0].values[{i}] (model.source=" in result.stderr
    assert "credentials must not be written into a URI" in result.stderr
    assert "AKIAEXAMPLEKEY" not in result.stdout + result.stderr and secret not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()


def test_validate_prints_each_trials_job_of_a_sweep_with_every_default():
    result = run_cli("validate", ROOT / "examples" / "local-tiny-sweep.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = list(yaml.safe_load_all(result.stdout))
    trials = parse_sweep(yaml.safe_load((ROOT / "examples" / "local-tiny-sweep.yaml").read_text())).trials
    assert [j["metadata"]["name"] for j in jobs] == [t.name for t in trials]
    for job, trial in zip(jobs, trials, strict=True):
        assert job["kind"] == "PreferenceTrainingJob" and job["spec"]["backoffLimit"] == 3  # a default, filled in
        assert job["spec"]["training"]["learningRate"] == trial.parameters["training.learningRate"]
        assert job["spec"]["output"]["uri"].endswith(f"out/sweep/{trial.name}")


def test_validate_refuses_a_sweep_naming_the_trial_and_the_value_at_fault(tmp_path):
    doc = yaml.safe_load((ROOT / "examples" / "local-tiny-sweep.yaml").read_text())
    doc["spec"]["parameters"] = [{"path": "algorithm.lossType", "values": [["sigmoid"], ["simpo"]]}]
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    error = error_of(run_cli("validate", path))
    assert (
        f'{path}: spec.parameters[0].values[1] (algorithm.lossType=["simpo"], trial local-tiny-sweep-1): '
        "spec.algorithm.lossType: 'simpo' not valid for algorithm 'dpo'" in error
    )
    assert "local-tiny-sweep-0" not in error, "the valid trial is not named"
