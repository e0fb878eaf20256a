"""A training phase killed mid-way resumes from the newest complete checkpoint when run again."""

import json
import os
import signal
import subprocess
import time

from trainer_jobs import CLI, run_cli


def wait_for(predicate, timeout: float = 300, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_training_resumes_from_newest_checkpoint(tmp_path, tmp_job):
    job = tmp_job(training={"maxSteps": 150, "checkpointEverySteps": 10, "perDeviceBatchSize": 4})
    assert run_cli("precompute", job).returncode == 0
    work = tmp_path / "work"

    def markers():
        return sorted(work.rglob("checkpoints/checkpoint-*/prefops-complete.json"))

    proc = subprocess.Popen(
        [*CLI, "train", str(job)],
        env={**os.environ, "PREFOPS_METRICS_PORT": "off"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: len(markers()) >= 2 or proc.poll() is not None,
            what="two checkpoints",
        )
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run was killed mid-training, not finished"
    done = max(int(p.parent.name.split("-")[1]) for p in markers())
    assert done < 150

    result = run_cli("train", job)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming from checkpoint-{done}" in result.stderr
    report = json.loads(next(work.rglob("phases/train.json")).read_text())
    assert report["resumedFrom"] == f"checkpoint-{done}" and report["steps"] == 150
    steps_logged = [h["step"] for h in report["logHistory"]]
    assert steps_logged == sorted(set(steps_logged)), "the resumed run continues the step count, no step repeats"
    assert steps_logged[-1] == 150


def test_checkpoints_beyond_the_limit_are_pruned(tmp_path, tmp_job):
    job = tmp_job(
        training={
            "maxSteps": 12,
            "checkpointEverySteps": 3,
            "checkpointsToKeep": 2,
            "perDeviceBatchSize": 4,
        }
    )
    assert run_cli("run", job).returncode == 0
    kept = sorted(p.name for p in (tmp_path / "work").rglob("checkpoint-*") if p.is_dir())
    assert kept == ["checkpoint-12", "checkpoint-9"]
