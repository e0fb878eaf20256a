"""SIGTERM, the way Kubernetes ends a pod (preemption, a drain, a deleted pod), is a clean stop with exit code 75,
"interrupted, resume me" (issue 19, item 4): training saves a checkpoint at the next step boundary on every rank and
exits; precompute and export stop where a restart goes on. The signal goes to the process a pod runs
(``prefops-trainer``), as the kubelet sends it; under torchrun that process passes it on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.trainer_jobs import Launched, run_cli, s3_job, wait_for


def checkpoints_saved(tmp_path: Path) -> list[int]:
    markers = (tmp_path / "work").rglob("attempts/0/checkpoints/checkpoint-*/prefops-complete.json")
    return sorted(int(p.parent.name.split("-")[1]) for p in markers)


@pytest.mark.distributed
@pytest.mark.parametrize(
    ("processes", "deepspeed"),
    [(1, None), (1, {"stage": 2}), (2, None), (2, {"stage": 3})],
    ids=["one-process", "zero2-one-process-torchrun", "ddp-torchrun", "zero3-torchrun"],
)
def test_sigterm_between_checkpoints_saves_one_at_the_next_step_exits_75_and_the_rerun_resumes_there(
    tmp_path, tmp_job, processes, deepspeed
):
    training = {"maxSteps": 40, "checkpointEverySteps": 1000, "perDeviceBatchSize": 4}
    job = tmp_job(
        resources={"gpusPerNode": 0, "processesPerNode": processes},
        training={**training, **({"deepspeed": deepspeed} if deepspeed else {})},
    )
    assert run_cli("precompute", job).returncode == 0
    term = tmp_path / "termination-log"
    term.write_text("")
    run = Launched("train", job, {"PREFOPS_TERMINATION_LOG": str(term), "PREFOPS_TERMINATION_GRACE_SECONDS": "120"})
    signalled_at = run.wait_for_step(3)
    run.terminate()
    assert run.wait() == 75, run.log[-3000:]

    (saved,) = checkpoints_saved(tmp_path)  # the only one: checkpointEverySteps is 1000
    last_done = max(run.steps)
    assert saved >= signalled_at, "no step done before the signal is lost"
    assert last_done - saved <= 1, f"steps done {last_done}, checkpoint at {saved}: at most one step lost"
    stopped = f"training stopped on SIGTERM at step {saved}; checkpoint-{saved} is saved"
    assert term.read_text() == stopped, "the pod's termination message says where it stopped"
    assert [line for line in run.lines if " ERROR " in line][-1].rstrip().endswith(stopped)

    result = run_cli("train", job)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from checkpoint-{saved}" in result.stderr
    report = json.loads(next((tmp_path / "work").rglob("attempts/0/phases/train.json")).read_text())
    assert report["resumedFrom"] == f"checkpoint-{saved}" and report["steps"] == 40
    steps_logged = [h["step"] for h in report["logHistory"]]
    assert steps_logged == list(range(1, 41)), "every step once: none repeated, none skipped"


def test_a_signal_before_training_starts_exits_75_at_once_with_nothing_saved(tmp_path, tmp_job):
    job = tmp_job(training={"maxSteps": 2})
    run = Launched("train", job)  # no reference cache: the phase would fail once it looked, but the signal comes first
    wait_for(lambda: any("train: job default/t" in line for line in run.lines), 300, "the phase to start")
    run.terminate()
    assert run.wait() == 75, run.log[-3000:]
    assert "stopped on SIGTERM (the pod was deleted, preempted or drained); run it again to resume" in run.log
    assert "Traceback" not in run.log
    assert checkpoints_saved(tmp_path) == []


@pytest.mark.integration
def test_a_precompute_stopped_between_shards_exits_75_and_its_rerun_skips_the_finished_shard(tmp_path, s3):
    from support.faultproxy import FaultProxy

    server, bucket = s3
    job = s3_job(tmp_path, bucket, reference={"workers": 2}, training={"maxSteps": 2})
    env = {**server.env, "PREFOPS_CACHE_DIR": str(tmp_path / "cache")}
    proxy = FaultProxy(int(server.endpoint.rsplit(":", 1)[1]), hold_after_writes=2, write_prefix=b"/refcache/")
    try:  # `run` computes the shards one after another, each its tokens then its log-probs; every request after shard
        # 0's two uploads is held unanswered
        run = Launched("run", job, {**env, "AWS_ENDPOINT_URL": proxy.endpoint})
        wait_for(lambda: proxy.held or run.proc.poll() is not None, 600, "shard 0 written")
        run.terminate()
        assert run.wait() == 75, run.log[-3000:]
    finally:
        proxy.close()
    shards = [k.rsplit("/", 1)[1] for k in server.keys(bucket, "work/refcache/")]
    whole = ["shard-00000-of-00002.parquet", "tokens-00000-of-00002.parquet"]
    assert shards == whole, "shard 0 whole, nothing else: no manifest, no part of shard 1"

    result = run_cli("run", job, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train shard 0/2 already in the cache; not recomputed" in result.stderr
    assert "train shard 1/2: 32 pairs" in result.stderr


@pytest.mark.integration
def test_an_export_stopped_mid_upload_exits_75_leaves_no_manifest_and_its_rerun_completes(tmp_path, s3):
    from support.faultproxy import FaultProxy

    server, bucket = s3
    job = s3_job(tmp_path, bucket, training={"maxSteps": 1})
    env = {**server.env, "PREFOPS_CACHE_DIR": str(tmp_path / "cache")}
    assert run_cli("precompute", job, env=env).returncode == 0
    assert run_cli("train", job, env=env).returncode == 0
    proxy = FaultProxy(int(server.endpoint.rsplit(":", 1)[1]), hold_after_writes=2, write_prefix=b"/models/")
    try:
        run = Launched("export", job, {**env, "AWS_ENDPOINT_URL": proxy.endpoint})
        wait_for(lambda: proxy.held or run.proc.poll() is not None, 600, "two files uploaded")
        run.terminate()
        assert run.wait() == 75, run.log[-3000:]
    finally:
        proxy.close()
    sent = server.keys(bucket, "models/t/")
    assert len(sent) == 2 and "models/t/prefops.json" not in sent, "two files arrived, and no manifest"

    result = run_cli("export", job, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "models/t/prefops.json" in server.keys(bucket, "models/t/")
