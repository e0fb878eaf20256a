"""Every local job example besides the demo (tested in test_demo.py) runs to the end as its header comment says, from
a fresh copy of examples/, and leaves a loadable merged model whose manifest names the example's algorithm. (The
local sweep example: test_sweep_local.py.)"""

import json
import shutil

import pytest
import yaml
from support.trainer_jobs import ROOT, run_cli

LOCAL = sorted(
    p.name
    for p in (ROOT / "examples").glob("local-*.yaml")
    if p.name != "local-tiny-dpo.yaml" and yaml.safe_load(p.read_text())["kind"] == "PreferenceTrainingJob"
)


def test_the_local_examples_besides_these_jobs_are_the_demo_and_the_sweep():
    others = sorted(p.name for p in (ROOT / "examples").glob("local-*.yaml") if p.name not in LOCAL)
    assert others == ["local-tiny-dpo.yaml", "local-tiny-sweep.yaml"]


def test_every_algorithm_family_with_a_phase_of_its_own_has_a_local_example():
    algorithms = {yaml.safe_load((ROOT / "examples" / n).read_text())["spec"]["algorithm"]["name"] for n in LOCAL}
    assert {"kto", "online-dpo"} <= algorithms


@pytest.mark.parametrize("name", LOCAL)
def test_local_example_runs_and_exports(tmp_path, name):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    doc = yaml.safe_load((tmp_path / "examples" / name).read_text())
    assert f"prefops-trainer run examples/{name}" in (tmp_path / "examples" / name).read_text()
    result = run_cli("run", f"examples/{name}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / doc["spec"]["output"]["uri"]
    manifest = json.loads((out / "prefops.json").read_text())
    assert manifest["algorithm"] == doc["spec"]["algorithm"]["name"]
    assert manifest["metrics"], "the final training metrics are recorded"
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in n for n, _ in model.named_parameters()), "the adapter is merged"
