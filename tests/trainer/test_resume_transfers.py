"""Collectives never wait on transfers (issue 18, item 9): a restart fetches and checks the checkpoint it resumes from
before the process group exists, so a download slower than ``spec.training.collectiveTimeoutSeconds`` still resumes.
Against the real S3 server, with every GET of the checkpoint's objects delayed past that timeout by a proxy."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.trainer_jobs import job_doc, run_cli, s3_job

from prefops_trainer.core.spec import TrainingSpec
from prefops_trainer.core.trlconfig import Runtime, training_kwargs

TIMEOUT_S = 10  # the least the CRD allows
DELAY_S = 14  # each GET of the checkpoint, longer than the timeout


def test_the_collective_timeout_is_the_specs_and_reaches_the_process_group_and_trl():
    from prefops_trainer.core.spec import parse_job

    job = parse_job(job_doc(Path("/tmp"), training={"collectiveTimeoutSeconds": 42}))
    assert job.spec.training.collective_timeout_seconds == 42
    assert TrainingSpec().collective_timeout_seconds == 1800
    kwargs = training_kwargs(job.spec, Runtime(cuda=False, dtype="float32", world_size=2), "/tmp/out")
    assert kwargs["ddp_timeout"] == 42


@pytest.mark.integration
@pytest.mark.distributed
def test_a_resume_whose_download_outlasts_the_collective_timeout_still_resumes(tmp_path, s3):
    from support.faultproxy import FaultProxy

    server, bucket = s3
    training = {"maxSteps": 4, "checkpointEverySteps": 2, "collectiveTimeoutSeconds": TIMEOUT_S}
    job = s3_job(tmp_path, bucket, resources={"gpusPerNode": 0, "processesPerNode": 2}, training=training)
    env = {**server.env, "PREFOPS_CACHE_DIR": str(tmp_path / "node-a")}
    assert run_cli("precompute", job, env=env).returncode == 0
    assert run_cli("train", job, env=env).returncode == 0

    proxy = FaultProxy(int(server.endpoint.rsplit(":", 1)[1]), delay_gets=b"/checkpoint-4/", delay_s=DELAY_S)
    try:  # the restart lands on another node: every file of checkpoint-4 comes through the slow link
        moved = {**env, "PREFOPS_CACHE_DIR": str(tmp_path / "node-b"), "AWS_ENDPOINT_URL": proxy.endpoint}
        result = run_cli("train", job, env={**moved, "PREFOPS_TRANSFER_THREADS": "32"})
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from checkpoint-4" in result.stderr
    fetched = [line for line in proxy.delayed if b"prefops-complete.json" not in line]
    assert len(fetched) >= 5, f"the checkpoint's files came through the delay: {proxy.delayed}"
