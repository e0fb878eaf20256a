"""Checkpoints that survive the pod: each save is synced to ``storage.uri`` when that is remote, and marked complete
with the sha256 of every file in it; a restarted training phase (on any node) resumes from the newest complete one,
after checking every file against the marker.

A checkpoint counts only once ``prefops-complete.json`` is in it: the marker is written last, after every rank has
saved, hashed and uploaded its part, so a crash in the middle of a save never leaves a checkpoint that looks usable.
Resuming unpickles files (DeepSpeed's ``torch.load(weights_only=False)``), so nothing of a checkpoint is loaded
unless its files are exactly those the marker lists, with the recorded sha256, and the marker was written by this
run (``<run>``, the job's uid on a cluster). The marker lives beside the files it vouches for, so this guards
against corruption, a half-replaced checkpoint and another run's checkpoint copied in, not against someone who can
write the whole prefix: keep the work bucket writable only by the job's own tenant (docs/operator.md, Security).
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..core.errors import IntegrityError
from ..core.integrity import check_relative_key, file_table, mismatches
from ..core.uris import Uri
from . import storage

log = logging.getLogger(__name__)

MARKER = "prefops-complete.json"
#: Markers before this format recorded no checksums; such a checkpoint is not resumed from.
FORMAT = 2
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


def _files(path: Path) -> list[Path]:
    """The files of checkpoint ``path`` a marker covers: all but the marker and fetches in flight, sorted."""
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name != MARKER and not storage.is_part(p))


def sync_share(path: Path, remote: Uri, share: tuple[int, int] = (0, 1)) -> dict[str, str]:
    """Hash (and, for remote storage, upload) this process's share of checkpoint ``path``: every ``share[1]``-th file
    from ``share[0]``, so the processes of a node split the work. Call once every process has saved. Returns
    ``{relative path: sha256}`` of the share."""
    mine = _files(path)[share[0] :: share[1]]
    table = {}
    for f in mine:
        rel = f.relative_to(path).as_posix()
        table[rel] = storage.sha256_file(f)
        if not remote.is_local:
            storage.upload_file(f, remote.join(path.name, rel))
    if not remote.is_local:
        log.info("synced %d files of %s to %s", len(mine), path.name, remote)
    return table


def merge(shares: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """One table from every process's share; the same file hashed on two nodes must agree."""
    out: dict[str, str] = {}
    for share in shares:
        for rel, digest in share.items():
            if out.setdefault(rel, digest) != digest:
                raise RuntimeError(f"checkpoint file {rel} differs between nodes ({out[rel][:12]}…, {digest[:12]}…)")
    return out


def mark_complete(path: Path, remote: Uri, step: int, run: str, files: Mapping[str, str]) -> None:
    """Write the marker (locally, then remotely): called once every rank has saved, hashed and uploaded."""
    doc = {"format": FORMAT, "step": step, "run": run, "files": dict(sorted(files.items()))}
    storage.write_json(Uri("file", str(path / MARKER)), doc)
    if not remote.is_local:
        storage.write_json(remote.join(path.name, MARKER), doc)


def newest(local: Path, remote: Uri, run: str) -> tuple[str, dict[str, str]] | None:
    """The newest checkpoint with a marker of this format: (its name, its file table), or None. A marker written by
    another run, or one that does not parse, raises :class:`IntegrityError`; nothing is downloaded yet."""
    state = _local_state(local) if remote.is_local else _remote_state(remote)
    for step in complete_steps(state):
        name = f"checkpoint-{step}"
        where = remote.join(name)
        try:
            doc = storage.read_json(where.join(MARKER))
        except ValueError as e:
            raise IntegrityError(f"{where}/{MARKER}: not JSON ({e}); the checkpoint is not loaded") from e
        table = _checked_marker(doc, str(where), step, run)
        if table is not None:
            return name, table
        log.warning("%s has a marker without checksums (an older prefops wrote it); not resuming from it", where)
    return None


def _checked_marker(doc: Any, where: str, step: int, run: str) -> dict[str, str] | None:
    version = doc.get("format", 1) if isinstance(doc, dict) else None
    if not isinstance(version, int) or version < FORMAT:
        return None
    if doc.get("run") != run or doc.get("step") != step:
        raise IntegrityError(
            f"{where}: its completion marker says step {doc.get('step')!r} of run {doc.get('run')!r}, not step {step} "
            f"of this run ({run}): a checkpoint is resumed only from the job's own prefix. It is not loaded; remove "
            "it to go on"
        )
    return file_table(doc.get("files"), f"{where}/{MARKER}")


def fetch_verified(local: Path, remote: Uri, name: str, table: Mapping[str, str]) -> Path:
    """Checkpoint ``name`` as a local folder holding exactly the files of ``table`` with their recorded sha256
    (downloaded from ``remote`` where the local copy differs); :class:`IntegrityError` naming what differs, before
    anything is loaded. The local marker is written once the folder checks out."""
    path, where = local / name, remote.join(name)
    if not path.resolve().is_relative_to(local.resolve()):
        raise IntegrityError(f"{where}: its folder {path} leads outside {local}; it is not loaded")
    found = _local_copy(path, where, table) if not remote.is_local else _hashes(path)
    problems = mismatches(table, found)
    if problems:
        raise IntegrityError(
            f"{where} does not match its completion marker ({'; '.join(problems[:5])}"
            f"{'; …' if len(problems) > 5 else ''}): it was altered after it was written, and nothing of it is "
            f"loaded. Remove {where} to resume from an earlier checkpoint (or from the start)"
        )
    if not remote.is_local:
        storage.write_json(Uri("file", str(path / MARKER)), storage.read_json(where.join(MARKER)))
    return path


def _hashes(path: Path) -> dict[str, str]:
    return {f.relative_to(path).as_posix(): storage.sha256_file(f) for f in _files(path)}


def _local_copy(path: Path, where: Uri, table: Mapping[str, str]) -> dict[str, str]:
    """Make ``path`` hold ``table``'s files, fetching each whose local copy differs; every key under ``where`` is
    checked first. Returns what the folder then holds, hashed."""
    listed = storage.remote_files(where)
    for rel in listed:
        check_relative_key(rel, str(where))
    (path / MARKER).unlink(missing_ok=True)
    have = _hashes(path) if path.exists() else {}
    for rel in set(have) - set(table):
        (path / rel).unlink()
    for rel, digest in table.items():
        if have.get(rel) != digest and rel in listed:
            log.info("downloading %s", where.join(rel))
            storage.fetch_file(where.join(rel), path / rel)
    return _hashes(path)


def prune(local: Path, remote: Uri, keep: int) -> None:
    """Keep the ``keep`` newest complete checkpoints (and any newer incomplete one) and delete the rest."""
    state = _local_state(local) if remote.is_local else _remote_state(remote)
    for step in complete_steps(state)[keep:]:
        name = f"checkpoint-{step}"
        if not remote.is_local:
            storage.remove(remote.join(name))
        shutil.rmtree(local / name, ignore_errors=True)
