"""The main job (make demo): the README's first command learns, evaluates on the held-out split, passes its gate and
leaves a loadable model in out/demo/."""

import json
import re
import shutil
import subprocess
import sys

from support.trainer_jobs import ROOT, run_cli


def test_demo_learns_and_exports_a_loadable_model(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    result = run_cli("run", "examples/local-tiny-dpo.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    shown = re.search(
        r"final rewards/accuracies: ([0-9.]+)\s+\(last-epoch mean ([0-9.]+)\)\s+eval ([0-9.]+)", result.stdout
    )
    accuracy, held_out = float(shown[2]), float(shown[3])
    assert accuracy > 0.8, result.stdout
    assert 0.5 < held_out < 1.0, f"the held-out accuracy is informative: above chance, below 1\n{result.stdout}"
    manifest = json.loads((tmp_path / "out" / "demo" / "prefops.json").read_text())
    evaluation = manifest["evaluation"]
    assert (evaluation["split"], evaluation["step"]) == ("test", 96)
    assert round(evaluation["metrics"]["rewards/accuracies"], 4) == held_out
    assert manifest["gate"] == {"metric": "rewards/accuracies", "value": evaluation["metrics"]["rewards/accuracies"],
                                "min": 0.6, "passed": True}  # fmt: skip
    assert "gate: eval rewards/accuracies" in result.stdout and "passed" in result.stdout
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "demo")
    tok = AutoTokenizer.from_pretrained(tmp_path / "out" / "demo")
    ids = tok("what color is the sky ?", return_tensors="pt").input_ids
    assert model(ids).logits.shape[-1] == len(tok)

    again = run_cli("run", "examples/local-tiny-dpo.yaml", cwd=tmp_path)
    assert again.returncode == 0
    assert "cacheHit=true" in again.stdout, "a second run reuses the reference cache"
    assert "resuming from checkpoint-96" in again.stderr, "and resumes instead of starting over"


def test_help_is_instant_because_heavy_imports_are_deferred():
    code = (
        "import sys; from prefops_trainer import cli; cli.build_parser().format_help(); "
        "print(sorted(m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_validate_prints_the_spec_with_defaults(tmp_path):
    result = run_cli("validate", ROOT / "examples" / "local-tiny-dpo.yaml")
    assert result.returncode == 0
    assert "backoffLimit: 3" in result.stdout and "lossType:" in result.stdout
