"""The operator at steady state, against a real kube-apiserver: the progress scrapes of many running jobs (each may
write a job's status) are paced together, so their rate stays bounded however many jobs run, and every job still
gets its progress."""

from __future__ import annotations

import time

import pytest
from support.jobs import job_manifest
from support.kube import wait_for
from support.trainer_metrics import TrainerMetricsServer

pytestmark = pytest.mark.integration

REFERENCE_FREE = {"algorithm": {"name": "simpo"}}
JOBS, RATE, INTERVAL = 8, 4.0, 0.2


def test_running_jobs_are_scraped_in_paced_slots_and_each_one_gets_its_progress(
    jobs, kubelet, namespace, start_operator
):
    with TrainerMetricsServer() as metrics:
        metrics.show("any", namespace, "train", step=7, total_steps=100, loss=0.5)
        start_operator("--progress-interval", str(INTERVAL), "--progress-writes-per-second", str(RATE),
                       "--trainer-metrics-port", str(metrics.port))  # fmt: skip
        names = [f"job-{i}" for i in range(JOBS)]
        for name in names:
            jobs.create(job_manifest(name, REFERENCE_FREE))
        for name in names:
            kubelet.run_all(namespace, jobs.wait_pods(name, "train", 1))
        for name in names:
            jobs.wait_status(name, lambda s: (s.get("progress") or {}).get("step") == 7, "progress", timeout=60)
        # unpaced, 8 jobs each every 0.2 s would take 12 scrapes in 0.3 s; paced, 12 slots span 11 / 4 s
        before, t0 = metrics.scrapes, time.monotonic()
        wait_for(lambda: metrics.scrapes >= before + 12, 60, "12 more scrapes", interval=0.05)
        elapsed = time.monotonic() - t0
    assert elapsed >= 8 / RATE, f"12 scrapes in {elapsed:.2f} s: more than {RATE:g} a second"
