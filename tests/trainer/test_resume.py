"""A training phase killed mid-way resumes from the newest complete checkpoint when run again."""

import json
import os
import re
import signal
import subprocess
import time

import pytest
from support.trainer_jobs import CLI, error_of, run_cli


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


def trained_with_checkpoints(tmp_path, tmp_job, name: str = "t", **training):
    """A finished train phase with checkpoints at steps 2 and 4; returns (job file, checkpoint-4's folder)."""
    job = tmp_job(name, training={"maxSteps": 4, "checkpointEverySteps": 2, "perDeviceBatchSize": 4, **training})
    assert run_cli("precompute", job).returncode == 0
    assert run_cli("train", job).returncode == 0
    return job, next((tmp_path / "work").rglob(f"jobs/default/{name}/*/attempts/0/checkpoints/checkpoint-4"))


def test_the_completion_marker_records_the_sha256_of_every_file_of_the_checkpoint(tmp_path, tmp_job):
    import hashlib

    _, ckpt = trained_with_checkpoints(tmp_path, tmp_job)
    marker = json.loads((ckpt / "prefops-complete.json").read_text())
    files = sorted(p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file())
    assert sorted(marker["files"]) == [f for f in files if f != "prefops-complete.json"]
    assert all(hashlib.sha256((ckpt / f).read_bytes()).hexdigest() == marker["files"][f] for f in marker["files"])
    assert (marker["step"], marker["run"], marker["attempt"]) == (4, ckpt.parents[3].name, 0)


@pytest.mark.parametrize("tamper", ["a file altered", "a file added"])
def test_a_tampered_checkpoint_is_refused_naming_the_file_and_nothing_is_loaded(tmp_path, tmp_job, tamper):
    job, ckpt = trained_with_checkpoints(tmp_path, tmp_job)
    report = next((tmp_path / "work").rglob("phases/train.json"))
    before = report.read_text()
    if tamper == "a file altered":
        weights = bytearray((ckpt / "adapter_model.safetensors").read_bytes())
        weights[-1] ^= 0x01  # same size, one bit
        (ckpt / "adapter_model.safetensors").write_bytes(bytes(weights))
        expected = r"adapter_model\.safetensors: sha256 [0-9a-f]{16}…, recorded [0-9a-f]{16}…"
    else:
        (ckpt / "extra.pth").write_bytes(b"import os\n")
        expected = r"extra\.pth: not in the record"
    error = error_of(run_cli("train", job))
    assert re.search(rf"{re.escape(str(ckpt))} does not match its completion marker \({expected}\)", error), error
    assert "nothing of it is loaded" in error and f"Remove {ckpt} to resume from an earlier checkpoint" in error
    assert report.read_text() == before, "no training ran"


def test_a_checkpoint_of_another_run_copied_into_the_jobs_prefix_is_refused(tmp_path, tmp_job):
    import shutil

    _, theirs = trained_with_checkpoints(tmp_path, tmp_job, "a")
    job, _ = trained_with_checkpoints(tmp_path, tmp_job, "b", learningRate=0.004)
    ours = next((tmp_path / "work").rglob("jobs/default/b/*/attempts/0/checkpoints"))
    shutil.copytree(theirs, ours / "checkpoint-8")
    error = error_of(run_cli("train", job))
    said = f"says step 4 of run {theirs.parents[3].name!r}, attempt 0, not step 8 of this run ({ours.parents[2].name})"
    assert f"{ours / 'checkpoint-8'}: its completion marker {said}" in error
    assert "a checkpoint is resumed only from the job's own prefix" in error


def test_a_checkpoint_whose_marker_records_no_checksums_is_passed_over(tmp_path, tmp_job):
    job, ckpt = trained_with_checkpoints(tmp_path, tmp_job)
    (ckpt / "prefops-complete.json").write_text(json.dumps({"step": 4}))  # as prefops wrote it before checksums
    result = run_cli("train", job)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "has a marker of an older format (an older prefops wrote it); not resuming from it" in result.stderr
    assert "resuming from checkpoint-2" in result.stderr
