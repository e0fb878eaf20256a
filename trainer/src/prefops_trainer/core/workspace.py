"""Where a job's intermediate results live, and the small reports each phase leaves for the next.

``<storage.uri>/jobs/<namespace>/<name>/<run>/`` holds checkpoints, the trained weights handed to export,
and one ``phases/<phase>.json`` report per finished phase. ``<run>`` is the resource's uid on a cluster
(a re-created job never picks up a predecessor's checkpoints) and, in local mode, a hash of the spec fields
that shape the model, so re-running the same job resumes while an edited job starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..adapters import storage
from ..adapters.sources import cache_dir
from .spec import Job
from .uris import Uri, parse_uri

#: Spec fields whose change makes earlier checkpoints unusable.
RUN_FIELDS = ("model", "dataset", "algorithm", "training", "reference")


def run_id(job: Job) -> str:
    if job.metadata.uid:
        return job.metadata.uid
    shaped = job.spec.model_dump(mode="json", include=set(RUN_FIELDS))
    return "local-" + hashlib.sha256(json.dumps(shaped, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Workspace:
    job: Job
    storage: Uri
    root: Uri

    @classmethod
    def for_job(cls, job: Job) -> Workspace:
        store = parse_uri(job.spec.storage.uri, "spec.storage.uri")
        return cls(job, store, store.join("jobs", job.namespace, job.name, run_id(job)))

    @property
    def checkpoints(self) -> Uri:
        return self.root.join("checkpoints")

    @property
    def trained(self) -> Uri:
        """The final weights (adapter or full model) the train phase hands to export."""
        return self.root.join("trained")

    def report_uri(self, phase: str) -> Uri:
        return self.root.join("phases", f"{phase}.json")

    def report(self, phase: str) -> dict[str, Any] | None:
        return storage.read_json_if_exists(self.report_uri(phase))

    def write_report(self, phase: str, report: dict[str, Any]) -> None:
        storage.write_json(self.report_uri(phase), report)

    def local_dir(self, name: str) -> Path:
        """A local folder for ``name``: inside the workspace for local storage, a cache folder for S3."""
        if self.root.is_local:
            path = Path(self.root.join(name).path)
        else:
            path = cache_dir() / "work" / self.job.namespace / self.job.name / self.root.path.rsplit("/", 1)[-1] / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@contextmanager
def timed(report: dict[str, Any]):
    """Fill ``startTime``, ``completionTime`` and ``seconds`` of a phase report around a block."""
    start = time.time()
    report["startTime"] = _iso(start)
    yield report
    end = time.time()
    report["completionTime"] = _iso(end)
    report["seconds"] = round(end - start, 3)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
