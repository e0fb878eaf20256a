"""Builders for unit tests of the operator's pure core: parsed jobs, pod views, a fixed clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from support.jobs import job_manifest

from prefops_operator.core.naming import PodPhase, pod_name
from prefops_operator.core.pods import PodView
from prefops_operator.core.spec import Job, parse_job

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_job(name: str = "qwen-dpo", spec: dict[str, Any] | None = None, generation: int = 1) -> Job:
    manifest = job_manifest(name, spec)
    manifest["metadata"].update(
        namespace="team-a",
        uid="uid-1234",
        generation=generation,
        resourceVersion="100",
        creationTimestamp="2026-01-01T12:00:00Z",
    )
    return parse_job(manifest)


def pod(job: Job, phase: PodPhase, index: int, status: str = "Running", attempt: int = 1, **kw: Any) -> PodView:
    view = PodView(
        name=pod_name(job.meta.name, phase, index, attempt),
        job=job.meta.name,
        phase=phase,
        index=index,
        attempt=attempt,
        status=status,
        created=kw.pop("created", T0),
        ip="10.0.0.1",
    )
    return replace(view, **kw)


def group(job: Job, phase: PodPhase, count: int, status: str = "Running", attempt: int = 1) -> list[PodView]:
    return [pod(job, phase, i, status, attempt) for i in range(count)]
