"""Checkpoints that survive the pod: each save is marked complete, synced to ``storage.uri`` when that is
remote, and a restarted training phase (on any node) resumes from the newest complete one.

A checkpoint counts only once ``prefops-complete.json`` is in it: the marker is written after every rank has
saved (and uploaded) its part, so a crash in the middle of a save never leaves a checkpoint that looks usable.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from ..core.uris import Uri
from . import storage

log = logging.getLogger(__name__)

MARKER = "prefops-complete.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def step_of(name: str) -> int | None:
    match = _STEP.match(name)
    return int(match.group(1)) if match else None


def complete_steps(names_with_marker: dict[str, bool]) -> list[int]:
    """Steps of the checkpoints whose marker is present, newest first. Pure."""
    steps = [step_of(n) for n, done in names_with_marker.items() if done]
    return sorted((s for s in steps if s is not None), reverse=True)


def _remote_state(remote: Uri) -> dict[str, bool]:
    return {
        name: storage.exists(remote.join(name, MARKER))
        for name in storage.list_names(remote)
        if step_of(name) is not None
    }


def _local_state(local: Path) -> dict[str, bool]:
    if not local.exists():
        return {}
    return {p.name: (p / MARKER).exists() for p in local.iterdir() if step_of(p.name) is not None}


def newest(local: Path, remote: Uri) -> Path | None:
    """The newest complete checkpoint as a local folder (downloaded from ``remote`` when needed), or None."""
    state = _local_state(local) if remote.is_local else _remote_state(remote)
    steps = complete_steps(state)
    if not steps:
        return None
    name = f"checkpoint-{steps[0]}"
    path = local / name
    if not remote.is_local and not (path / MARKER).exists():
        log.info("downloading %s from %s", name, remote)
        storage.download_dir(remote.join(name), path)
    return path


def upload(path: Path, remote: Uri) -> None:
    """Send this process's files of checkpoint ``path`` to ``remote`` (no-op for local storage)."""
    if not remote.is_local:
        sent = storage.upload_dir(path, remote.join(path.name), skip=frozenset({MARKER}))
        log.info("synced %s to %s (%d files)", path.name, remote, len(sent))


def mark_complete(path: Path, remote: Uri, step: int) -> None:
    """Write the marker (locally, then remotely): called once every rank has saved and uploaded."""
    storage.write_json(Uri("file", str(path / MARKER)), {"step": step})
    if not remote.is_local:
        storage.write_json(remote.join(path.name, MARKER), {"step": step})


def prune(local: Path, remote: Uri, keep: int) -> None:
    """Keep the ``keep`` newest complete checkpoints (and any newer incomplete one) and delete the rest."""
    state = _local_state(local) if remote.is_local else _remote_state(remote)
    for step in complete_steps(state)[keep:]:
        name = f"checkpoint-{step}"
        if not remote.is_local:
            storage.remove(remote.join(name))
        shutil.rmtree(local / name, ignore_errors=True)
