"""Fencing (issue 19, item 5): an older attempt may still be alive (a dead kubelet leaves its containers running, a
partitioned node keeps training) and go on writing while the operator's next attempt runs. Against the real S3 server,
two train processes of one run with different ``PREFOPS_ATTEMPT`` write at once, the older one last: the newer
attempt's checkpoints and trained weights stay as it wrote them, export publishes the attempt the operator names, and
a further restart resumes from the newer attempt."""

from __future__ import annotations

import hashlib
import json
import os
import signal

import pytest
import yaml
from support.trainer_jobs import Launched, run_cli, s3_job, wait_for

pytestmark = pytest.mark.integration

UID = "fencing-uid"


def attempt_job(tmp_path, bucket, attempt: int):
    """The job as attempt ``attempt`` runs it. On GPUs two attempts of a job diverge (kernels are not deterministic);
    on CPUs they would write the very same bytes, so each attempt here gets its own data order (seed): every file an
    attempt writes differs from the other's."""
    folder = tmp_path / f"attempt-{attempt}"
    folder.mkdir()
    training = {"maxSteps": 12, "checkpointEverySteps": 2, "checkpointsToKeep": 2, "perDeviceBatchSize": 4}
    path = s3_job(folder, bucket, training={**training, "seed": attempt},
                  output={"uri": f"s3://{bucket}/models/t", "merge": False})  # fmt: skip
    doc = yaml.safe_load(path.read_text())
    doc["metadata"]["uid"] = UID
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def markers(server, bucket, attempt: int) -> list[int]:
    prefix = f"work/jobs/default/t/{UID}/attempts/{attempt}/checkpoints/"
    keys = [k for k in server.keys(bucket, prefix) if k.endswith("/prefops-complete.json")]
    return sorted(int(k[len(prefix) :].split("/")[0].split("-")[1]) for k in keys)


def test_an_older_attempt_writing_after_a_newer_one_corrupts_nothing_of_it(tmp_path, s3):
    server, bucket = s3
    env = {**server.env}
    nodes = {n: {**env, "PREFOPS_CACHE_DIR": str(tmp_path / f"node-{n}")} for n in (1, 2, 3)}
    jobs = {n: attempt_job(tmp_path, bucket, n) for n in (1, 2)}
    assert run_cli("precompute", jobs[1], env=nodes[1]).returncode == 0

    old = Launched("train", jobs[1], {**nodes[1], "PREFOPS_ATTEMPT": "1"})
    wait_for(lambda: markers(server, bucket, 1) or old.proc.poll() is not None, 600, "attempt 1's first checkpoint")
    os.kill(old.proc.pid, signal.SIGSTOP)  # its node is cut off: the operator starts attempt 2 elsewhere
    new = Launched("train", jobs[2], {**nodes[2], "PREFOPS_ATTEMPT": "2"})
    try:
        wait_for(lambda: markers(server, bucket, 2) or new.proc.poll() is not None, 600, "attempt 2's checkpoint")
        done = len(old.steps)
        os.kill(old.proc.pid, signal.SIGCONT)  # both train and write at once
        wait_for(lambda: len(old.steps) >= done + 3 or old.proc.poll() is not None, 600, "attempt 1 to go on")
        os.kill(old.proc.pid, signal.SIGSTOP)
        assert new.wait() == 0, new.log[-3000:]
    finally:
        os.kill(old.proc.pid, signal.SIGCONT)  # and it writes last, after attempt 2 finished
    assert old.wait() == 0, old.log[-3000:]
    assert "resuming from checkpoint-" in new.log

    run = f"work/jobs/default/t/{UID}"
    for step in markers(server, bucket, 2):  # attempt 2's checkpoints: whole, as its markers record them
        prefix = f"{run}/attempts/2/checkpoints/checkpoint-{step}"
        marker = json.loads(server.get(bucket, f"{prefix}/prefops-complete.json"))
        assert (marker["attempt"], marker["step"]) == (2, step)
        assert set(marker["files"]) == {k[len(prefix) + 1 :] for k in server.keys(bucket, prefix + "/")} - {
            "prefops-complete.json"
        }
        for rel, digest in marker["files"].items():
            assert hashlib.sha256(server.get(bucket, f"{prefix}/{rel}")).hexdigest() == digest, rel

    export = run_cli("export", jobs[2], env={**nodes[3], "PREFOPS_ATTEMPT": "3", "PREFOPS_TRAINED_ATTEMPT": "2"})
    assert export.returncode == 0, export.stderr[-3000:]
    published = server.get(bucket, "models/t/adapter_model.safetensors")
    trained_by = {n: next((tmp_path / f"node-{n}").rglob("trained/adapter_model.safetensors")) for n in (1, 2)}
    assert published == trained_by[2].read_bytes(), "export published what attempt 2 trained"
    assert published != trained_by[1].read_bytes(), "the attempts trained different weights"

    from prefops_trainer.adapters.checkpoints import newest
    from prefops_trainer.core.spec import parse_job
    from prefops_trainer.core.workspace import Workspace

    job = parse_job(yaml.safe_load(jobs[2].read_text()))
    found = newest(Workspace.for_job(job, tmp_path / "node-3", attempt=3))
    assert found is not None and (found.attempt, found.name) == (2, "checkpoint-12"), (
        "a restart resumes from the newest attempt that saved a checkpoint, whatever an older one wrote since"
    )
    assert markers(server, bucket, 1), "attempt 1 did write after attempt 2 (into its own folder)"
