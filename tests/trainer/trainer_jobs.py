"""Helpers for trainer tests: job manifests on the tiny model and data in examples/tiny, run in tmp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from support.jobs import deep_merge

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "examples" / "tiny"
CLI = [sys.executable, "-m", "prefops_trainer"]


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
