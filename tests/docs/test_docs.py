"""Docs that match the code: the generated spec reference is current, the README opens with the two commands,
and every metric the README lists is one the code exports."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_spec_reference_is_generated_from_the_current_crd():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_spec_reference.py"), "--check"],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_readme_opens_with_the_demo_and_test_commands():
    head = (ROOT / "README.md").read_text().splitlines()[:8]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


def test_every_trainer_metric_in_the_readme_is_exported():
    from prometheus_client import generate_latest

    from prefops_trainer.adapters.metrics import TrainerMetrics

    m = TrainerMetrics("j", "n")
    m.set_phase("train")
    for name in m.gauges:
        m.set(name, 1.0)
    m.record_memory()
    m.record_rank_throughput(1.0)
    exported = set(re.findall(r"^(prefops_trainer_[a-z_]+)", generate_latest(m.registry).decode(), re.M))
    listed = set(re.findall(r"`(prefops_trainer_[a-z_]+)`", (ROOT / "README.md").read_text()))
    assert listed, "the README lists the trainer's metrics"
    assert listed <= exported, f"README names metrics the trainer does not export: {sorted(listed - exported)}"
    assert exported - {"prefops_trainer_phase"} <= listed | {"prefops_trainer_phase"}, (
        f"exported but undocumented: {sorted(exported - listed)}"
    )


def test_the_readme_lists_every_example_manifest():
    listed = set(re.findall(r"`examples/([\w.-]+\.yaml)`", (ROOT / "README.md").read_text()))
    assert listed == {p.name for p in (ROOT / "examples").glob("*.yaml")}
