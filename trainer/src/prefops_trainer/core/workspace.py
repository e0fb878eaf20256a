"""Where a job's intermediate results live: the storage layout of docs/contract.md §6, as paths. Pure.

``<storage.uri>/refcache/<key>/`` holds the reference cache, shared by every job. ``<storage.uri>/jobs/<namespace>/
<name>/<run>/`` holds one run: ``phases/<phase>.json`` per finished precompute or export phase, and under
``attempts/<attempt>/`` what one attempt of the train phase writes: its checkpoints, the trained weights handed to
export (``trained/``) and its report (``phases/train.json``). ``<run>`` is the resource's uid on a cluster (a
re-created job never picks up a predecessor's checkpoints) and, in local mode, a hash of the spec fields that shape the
model, so re-running the same job resumes while an edited job starts afresh. ``<attempt>`` is the operator's
``PREFOPS_ATTEMPT`` (0 in local mode): an older attempt that is still alive (its node lost, its containers running)
writes only under its own number, so it can never overwrite or prune what a newer attempt wrote.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import SpecError
from .spec import Job
from .uris import Uri

#: Spec fields whose change makes earlier checkpoints unusable.
RUN_FIELDS = ("model", "dataset", "algorithm", "training", "reference")
#: Written into ``trained/`` last, once the train phase has saved everything export needs.
TRAINED_MARKER = "prefops-trained.json"
#: The attempt of the pod this process runs in (set by the operator on every pod; unset in local mode).
ATTEMPT_ENV = "PREFOPS_ATTEMPT"
#: The attempt whose ``trained/`` an export pod publishes (set by the operator on export pods).
TRAINED_ATTEMPT_ENV = "PREFOPS_TRAINED_ATTEMPT"
#: Reports written per attempt (the train phase's); the others are per run.
ATTEMPT_REPORTS = ("train",)
#: The attempt number of local mode, where nothing else runs the job at the same time.
LOCAL_ATTEMPT = 0


def parse_attempt(value: str | None, name: str) -> int | None:
    """An attempt number from environment variable ``name`` (None when unset); :class:`SpecError` naming it when it
    is not a whole number >= 0."""
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise SpecError(f"{name}: must be a whole number >= 0 (the operator's attempt number), got {value!r}")
    return int(value)


def attempt_of(env: Mapping[str, str]) -> int:
    """This process's attempt: ``PREFOPS_ATTEMPT``, or :data:`LOCAL_ATTEMPT` when unset."""
    found = parse_attempt(env.get(ATTEMPT_ENV), ATTEMPT_ENV)
    return LOCAL_ATTEMPT if found is None else found


def trained_attempt_of(env: Mapping[str, str]) -> int | None:
    """The attempt whose trained weights export publishes: ``PREFOPS_TRAINED_ATTEMPT``; in local mode (no
    ``PREFOPS_ATTEMPT`` either) the run's own; None on an operator's pod that names none (an operator older than
    the variable: export then takes the newest attempt whose ``trained/`` is complete)."""
    found = parse_attempt(env.get(TRAINED_ATTEMPT_ENV), TRAINED_ATTEMPT_ENV)
    if found is not None:
        return found
    return None if env.get(ATTEMPT_ENV) else LOCAL_ATTEMPT


def run_id(job: Job) -> str:
    if job.metadata.uid:
        return job.metadata.uid
    shaped = job.spec.model_dump(mode="json", include=set(RUN_FIELDS))
    return "local-" + hashlib.sha256(json.dumps(shaped, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Workspace:
    """The storage layout of one run, as one attempt sees it.

    Attributes:
        storage: ``spec.storage.uri``.
        root: ``<storage>/jobs/<namespace>/<name>/<run>``.
        local_root: where this machine keeps local copies of the run's files: ``root`` itself for local storage,
            a folder of the local cache for S3.
        attempt: the attempt this process belongs to (:func:`attempt_of`).
    """

    storage: Uri
    root: Uri
    local_root: Path
    attempt: int = LOCAL_ATTEMPT

    @classmethod
    def for_job(cls, job: Job, cache_dir: Path, attempt: int = LOCAL_ATTEMPT) -> Workspace:
        """The workspace of ``job``; ``cache_dir`` is the local cache (``$PREFOPS_CACHE_DIR``)."""
        run = run_id(job)
        root = job.spec.storage.uri.join("jobs", job.namespace, job.name, run)
        local = Path(root.path) if root.is_local else cache_dir / "work" / job.namespace / job.name / run
        return cls(job.spec.storage.uri, root, local, attempt)

    def at(self, attempt: int) -> Workspace:
        """The same run as attempt ``attempt`` sees it."""
        return replace(self, attempt=attempt)

    @property
    def run(self) -> str:
        """``<run>``: the job's uid on a cluster, ``local-<hash>`` in local mode."""
        return posixpath.basename(self.root.path)

    def refcache(self, key: str) -> Uri:
        """The reference cache of ``key``, shared by every job on this storage."""
        return self.storage.join("refcache", key)

    @property
    def attempts(self) -> Uri:
        """``<run>/attempts``: one folder per attempt of the train phase, named by its number."""
        return self.root.join("attempts")

    def checkpoints_of(self, attempt: int) -> Uri:
        return self.attempts.join(str(attempt), "checkpoints")

    @property
    def checkpoints(self) -> Uri:
        """This attempt's checkpoints."""
        return self.checkpoints_of(self.attempt)

    @property
    def trained(self) -> Uri:
        """The final weights (adapter or full model) this attempt hands to export."""
        return self.attempts.join(str(self.attempt), "trained")

    @property
    def trained_marker(self) -> Uri:
        return self.trained.join(TRAINED_MARKER)

    @property
    def phases(self) -> Uri:
        return self.root.join("phases")

    def report(self, name: str) -> Uri:
        """The report of phase ``name``: ``precompute``, ``precompute-00001``, ``export``, ``train`` (per attempt)."""
        if name in ATTEMPT_REPORTS:
            return self.attempts.join(str(self.attempt), "phases", f"{name}.json")
        return self.phases.join(f"{name}.json")

    def local_of(self, attempt: int, name: str) -> Path:
        """The local folder for attempt ``attempt``'s ``name`` (``checkpoints``, ``trained``); the caller creates it.
        It mirrors the storage layout, so for local storage it is the stored folder itself."""
        return self.local_root / "attempts" / str(attempt) / name

    def local(self, name: str) -> Path:
        """The local folder for this attempt's ``name``."""
        return self.local_of(self.attempt, name)
