"""Trainer metrics: what /metrics serves, and a real Prometheus scraping a running `prefops-trainer run`."""

import json
import os
import subprocess

import pytest
from prometheus_client import generate_latest
from support.trainer_jobs import CLI, TINY

from prefops_trainer.adapters.metrics import PHASES, TrainerMetrics

REQUIRED = [
    "loss", "rewards_chosen", "rewards_rejected", "reward_accuracy", "reward_margin", "logps_chosen",
    "logps_rejected", "learning_rate", "grad_norm", "step", "total_steps", "epoch", "tokens_per_second",
    "precompute_pairs_done", "precompute_pairs_total", "phase", "memory_bytes",
]  # fmt: skip


@pytest.fixture
def in_process(monkeypatch):
    """Run ``prefops-trainer`` in this process, recording every phase the metric enters; returns (run, phases)."""
    from prefops_trainer import cli
    from prefops_trainer.adapters import metrics

    for key, value in {"PREFOPS_METRICS_PORT": "off", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1",
                       "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)  # restored afterwards; the CLI only sets what is unset
    monkeypatch.setattr(metrics, "_current", None)
    phases = []
    real = metrics.TrainerMetrics.set_phase

    def recording(self, phase):
        if not phases or phases[-1] != phase:
            phases.append(phase)
        real(self, phase)

    monkeypatch.setattr(metrics.TrainerMetrics, "set_phase", recording)

    def run(*args) -> int:
        with pytest.raises(SystemExit) as done:
            cli.main([*map(str, args)])
        return done.value.code

    return run, phases


def served_phase() -> str:
    from prefops_trainer.adapters import metrics

    text = generate_latest(metrics.current().registry).decode()
    (state,) = [s for s in PHASES if f'prefops_trainer_phase="{s}"}} 1.0' in text]  # an enum: one state at a time
    return state


def test_the_phase_metric_follows_a_run_through_every_phase_to_done(tmp_job, in_process):
    run, phases = in_process
    assert run("run", tmp_job(training={"maxSteps": 2})) == 0
    assert phases == ["precompute", "train", "export", "done"]
    assert served_phase() == "done"


def test_the_phase_metric_ends_failed_when_a_phase_fails(tmp_job, in_process):
    run, phases = in_process
    assert run("export", tmp_job()) == 1, "export before training fails"
    assert phases == ["export", "failed"]
    assert served_phase() == "failed"


def test_a_trl_log_entry_becomes_labelled_gauges():
    m = TrainerMetrics("qwen-dpo", "team-a")
    m.set_phase("train")
    m.record_logs({"loss": 0.5, "rewards/accuracies": 0.75, "rewards/margins": 1.5, "learning_rate": 1e-5}, step=7)
    m.record_memory()
    text = generate_latest(m.registry).decode()
    assert 'prefops_trainer_loss{job_name="qwen-dpo",job_namespace="team-a",phase="train"} 0.5' in text
    assert 'prefops_trainer_reward_accuracy{job_name="qwen-dpo",job_namespace="team-a",phase="train"} 0.75' in text
    assert 'prefops_trainer_step{job_name="qwen-dpo",job_namespace="team-a",phase="train"} 7.0' in text
    assert 'prefops_trainer_phase{job_name="qwen-dpo",job_namespace="team-a",prefops_trainer_phase="train"} 1.0' in text
    assert 'kind="rss"' in text


def test_an_evaluation_becomes_eval_gauges_of_its_step_and_a_metric_it_lacks_is_removed():
    m = TrainerMetrics("qwen-dpo", "team-a")
    m.set_phase("train")
    m.record_eval({"loss": 0.5, "rewards/accuracies": 0.75, "rewards/margins": 1.5}, step=200)
    m.record_eval({"loss": 0.4, "rewards/accuracies": 0.8, "rewards/margins": float("nan")}, step=400)
    text = generate_latest(m.registry).decode()
    labels = '{job_name="qwen-dpo",job_namespace="team-a",phase="train"}'
    assert f"prefops_trainer_eval_step{labels} 400.0" in text
    assert f"prefops_trainer_eval_loss{labels} 0.4" in text
    assert f"prefops_trainer_eval_rewards_accuracies{labels} 0.8" in text
    assert "prefops_trainer_eval_rewards_margins{" not in text, "no series of step 200 beside step 400's"


@pytest.mark.integration
def test_prometheus_scrapes_a_running_job(tmp_path, tmp_job):
    from support.kube import free_port
    from support.prometheus import Prometheus

    port = free_port()
    prom = Prometheus.start(tmp_path / "prom", {"prefops-trainer": [f"127.0.0.1:{port}"]})
    try:
        job = tmp_job(
            "metrics",
            dataset={"source": str(TINY / "prefs-split"), "evalSplit": "test"},
            training={
                "maxSteps": 240,
                "perDeviceBatchSize": 2,
                "gradientAccumulation": 2,
                "checkpointEverySteps": 60,
            },
        )
        env = {**os.environ, "PREFOPS_METRICS_PORT": str(port), "PREFOPS_METRICS_ADDR": "127.0.0.1"}
        result = subprocess.run(
            [*CLI, "run", str(job)], env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert result.returncode == 0, result.stderr[-2000:]
        sel = '{job_name="metrics",job_namespace="default"}'
        prom.wait_for(f"max_over_time(prefops_trainer_step{sel}[10m]) > 0", what="(steps scraped)")
        present = {name: prom.query(f"last_over_time(prefops_trainer_{name}{sel}[10m])") for name in REQUIRED}
        missing = [name for name, result in present.items() if not result]
        assert not missing, f"series missing in Prometheus: {missing}"
        step_lo, step_hi = (prom.values(f"{f}_over_time(prefops_trainer_step{sel}[10m])")[0] for f in ("min", "max"))
        assert step_hi > step_lo, "the step moved while Prometheus watched"
        assert prom.values(f"changes(prefops_trainer_loss{sel}[10m])")[0] > 0, "the loss moved"
        assert prom.values(f"last_over_time(prefops_trainer_total_steps{sel}[10m])") == [240.0]
        assert prom.values(f"last_over_time(prefops_trainer_precompute_pairs_total{sel}[10m])") == [64.0]
        assert {r["metric"]["kind"] for r in present["memory_bytes"]} >= {"rss"}

        report = json.loads(next((tmp_path / "work").rglob("phases/train.json")).read_text())
        logged = {round(h["loss"], 6) for h in report["logHistory"]}
        samples = prom.query(f"prefops_trainer_loss{sel}[10m]")[0]["values"]
        assert len(samples) >= 2
        assert all(round(float(v), 6) in logged for _, v in samples), (
            "every scraped loss is one TRL logged for an optimizer step (two micro-batches each)"
        )
        evaluations = {e["step"]: e["metrics"] for e in report["evalHistory"]}
        assert sorted(evaluations) == [60, 120, 180, 240]
        steps = prom.query(f"prefops_trainer_eval_step{sel}[10m]")[0]["values"]
        accuracy = dict(prom.query(f"prefops_trainer_eval_rewards_accuracies{sel}[10m]")[0]["values"])
        assert steps, "the eval step was scraped"
        for at, step in steps:  # a scrape's eval gauges all describe the step it serves
            assert round(float(accuracy[at]), 6) == round(evaluations[int(float(step))]["rewards/accuracies"], 6)
    finally:
        prom.stop()
