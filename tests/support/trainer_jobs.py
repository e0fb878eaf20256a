"""Helpers for trainer tests: job manifests on the tiny model and data in examples/tiny, run in tmp dirs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from support.jobs import deep_merge

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "examples" / "tiny"
CLI = [sys.executable, "-m", "prefops_trainer"]


@dataclass(frozen=True)
class WorkDir:
    """The storage a local run wrote (``storage.uri``): its attempts and checkpoints, found wherever the run's
    key put them."""

    work: Path

    @property
    def trained(self) -> Path:
        """The train phase's saved model (attempt 0)."""
        return next(self.work.rglob("attempts/0/trained"))

    def checkpoint(self, step: int) -> Path:
        return next(self.work.rglob(f"checkpoints/checkpoint-{step}"))


def job_doc(tmp: Path, name: str = "t", **spec: Any) -> dict:
    """A small, fast job on the tiny model: LoRA DPO, 64 pairs, a few steps; ``spec`` merges over it."""
    base = {
        "model": {
            "source": str(TINY / "model"),
            "dtype": "float32",
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        },
        "dataset": {
            "source": str(TINY / "prefs.jsonl"),
            "maxLength": 64,
            "maxSamples": 64,
        },
        "algorithm": {"name": "dpo"},
        "training": {
            "maxSteps": 4,
            "learningRate": 0.005,
            "perDeviceBatchSize": 8,
            "checkpointEverySteps": 100,
        },
        "resources": {"gpusPerNode": 0},
        "output": {"uri": str(tmp / "out")},
        "storage": {"uri": str(tmp / "work")},
    }
    return {
        "apiVersion": "prefops.dev/v1alpha1",
        "kind": "PreferenceTrainingJob",
        "metadata": {"name": name},
        "spec": deep_merge(base, spec),
    }


def write_job(tmp: Path, name: str = "t", **spec: Any) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job_doc(tmp, name, **spec), sort_keys=False))
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    full_env = {**os.environ, "PREFOPS_METRICS_PORT": "off", **(env or {})}
    return subprocess.run(
        [*CLI, *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_of(result, code: int = 2) -> str:
    """The one error paragraph the CLI printed (its only ERROR log line), asserting the exit code and that there is
    no traceback: 2 for the user's mistakes, 1 for an outage that outlasted the retries."""
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def upload_tree(server, bucket: str, local: Path, prefix: str) -> str:
    """Every file under ``local`` to ``s3://bucket/prefix/``; returns that URI."""
    client = server.client()
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local).as_posix()}")
    return f"s3://{bucket}/{prefix}"


def s3_job(tmp_path: Path, bucket: str, name: str = "t", **spec: Any) -> Path:
    """:func:`write_job` with output and storage in ``bucket``."""
    base = {
        "output": {"uri": f"s3://{bucket}/models/{name}"},
        "storage": {"uri": f"s3://{bucket}/work"},
    }
    return write_job(tmp_path, name, **{**base, **spec})


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Launched:
    """``prefops-trainer <command> <job>`` in a child process, its log read as it comes (steps noted)."""

    def __init__(self, command: str, job: Path, env: dict | None = None) -> None:
        full_env = {**os.environ, "PREFOPS_METRICS_PORT": "off", **(env or {})}
        self.proc = subprocess.Popen([*CLI, command, str(job)], env=full_env, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.steps: list[int] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            found = re.search(r"\bstep (\d+)/\d+ loss=", line)
            if found:
                self.steps.append(int(found.group(1)))

    def wait_for_step(self, step: int, timeout: float = 600) -> int:
        """The last step logged, once it is at least ``step``."""
        wait_for(lambda: (self.steps and self.steps[-1] >= step) or self.proc.poll() is not None, timeout, "a step")
        assert self.proc.poll() is None, self.log[-3000:]
        return self.steps[-1]

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 600) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout=30)
        return code

    @property
    def log(self) -> str:
        return "".join(self.lines)
