"""Fixtures for trainer tests."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from support.trainer_jobs import write_job


@pytest.fixture
def tmp_job(tmp_path):
    """``tmp_job(**spec)`` writes a job YAML under tmp_path and returns its path."""

    def make(name: str = "t", **spec: Any) -> Path:
        return write_job(tmp_path, name, **spec)

    return make


@pytest.fixture
def s3(s3_server, monkeypatch, request):
    """A fresh bucket on the session's S3 server, with this process's AWS variables pointing at it."""
    from prefops_trainer.adapters import stores

    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    stores.forget()
    digest = hashlib.sha256(request.node.name.encode()).hexdigest()[:8]  # parametrized tests get their own
    name = "b-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40] + "-" + digest
    s3_server.create_bucket(name)
    yield s3_server, name
    stores.forget()
