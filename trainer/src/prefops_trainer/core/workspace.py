"""Where a job's intermediate results live: the storage layout of docs/contract.md §6, as paths. Pure.

``<storage.uri>/refcache/<key>/`` holds the reference cache, shared by every job. ``<storage.uri>/jobs/<namespace>/
<name>/<run>/`` holds one run's checkpoints, the trained weights handed to export (``trained/``) and one
``phases/<phase>.json`` report per finished phase. ``<run>`` is the resource's uid on a cluster (a re-created job
never picks up a predecessor's checkpoints) and, in local mode, a hash of the spec fields that shape the model, so
re-running the same job resumes while an edited job starts afresh.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .spec import Job
from .uris import Uri

#: Spec fields whose change makes earlier checkpoints unusable.
RUN_FIELDS = ("model", "dataset", "algorithm", "training", "reference")
#: Written into ``trained/`` last, once the train phase has saved everything export needs.
TRAINED_MARKER = "prefops-trained.json"


def run_id(job: Job) -> str:
    if job.metadata.uid:
        return job.metadata.uid
    shaped = job.spec.model_dump(mode="json", include=set(RUN_FIELDS))
    return "local-" + hashlib.sha256(json.dumps(shaped, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Workspace:
    """The storage layout of one run.

    Attributes:
        storage: ``spec.storage.uri``.
        root: ``<storage>/jobs/<namespace>/<name>/<run>``.
        local_root: where this machine keeps local copies of the run's files: ``root`` itself for local storage,
            a folder of the local cache for S3.
    """

    storage: Uri
    root: Uri
    local_root: Path

    @classmethod
    def for_job(cls, job: Job, cache_dir: Path) -> Workspace:
        """The workspace of ``job``; ``cache_dir`` is the local cache (``$PREFOPS_CACHE_DIR``)."""
        run = run_id(job)
        root = job.spec.storage.uri.join("jobs", job.namespace, job.name, run)
        local = Path(root.path) if root.is_local else cache_dir / "work" / job.namespace / job.name / run
        return cls(job.spec.storage.uri, root, local)

    def refcache(self, key: str) -> Uri:
        """The reference cache of ``key``, shared by every job on this storage."""
        return self.storage.join("refcache", key)

    @property
    def checkpoints(self) -> Uri:
        return self.root.join("checkpoints")

    @property
    def trained(self) -> Uri:
        """The final weights (adapter or full model) the train phase hands to export."""
        return self.root.join("trained")

    @property
    def trained_marker(self) -> Uri:
        return self.trained.join(TRAINED_MARKER)

    @property
    def phases(self) -> Uri:
        return self.root.join("phases")

    def report(self, name: str) -> Uri:
        """The report of phase ``name`` (``precompute``, ``precompute-00001``, ``train``, ``export``)."""
        return self.phases.join(f"{name}.json")

    def local(self, name: str) -> Path:
        """The local folder for ``name`` (``checkpoints``, ``trained``); the caller creates it."""
        return self.local_root / name
