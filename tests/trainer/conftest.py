"""Fixtures for trainer tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from trainer_jobs import write_job


@pytest.fixture
def tmp_job(tmp_path):
    """``tmp_job(**spec)`` writes a job YAML under tmp_path and returns its path."""

    def make(name: str = "t", **spec: Any) -> Path:
        return write_job(tmp_path, name, **spec)

    return make
