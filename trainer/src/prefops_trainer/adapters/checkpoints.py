"""Checkpoints that survive the pod: each save is synced to ``storage.uri`` when that is remote, and marked complete
with the sha256 of every file in it; a restarted training phase (on any node) resumes from the newest complete one,
after checking every file against the marker.

A checkpoint counts only once ``prefops-complete.json`` is in it: the marker is written last, after every rank has
saved, hashed and uploaded its part, so a crash in the middle of a save never leaves a checkpoint that looks usable.
Nothing of a checkpoint is loaded unless its files are exactly those the marker lists, with the recorded sha256, and
the marker was written by this run (``<run>``, the job's uid on a cluster) and attempt. The marker lives beside the
files it vouches for, so this guards against corruption, a half-replaced checkpoint and another run's checkpoint
copied in, not against someone who can write the whole prefix: keep the work bucket writable only by the job's own
tenant (docs/operator.md, Security). What such a writer can forge is numbers, not code: the files are unpickled only
by torch's weights-only unpickler (:mod:`.unpickling`), DeepSpeed's ``torch.load(weights_only=False)`` included.

Fencing. Each attempt of the train phase writes under ``<run>/attempts/<attempt>/checkpoints`` only, and prunes only
there (and, once it has a checkpoint of its own, the older attempts' folders). A restart resumes from the newest
attempt that has a complete checkpoint, so an older attempt that is still running (its node cut off, its containers
alive) can neither overwrite a newer attempt's checkpoints nor be resumed from once a newer attempt has saved one.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import IntegrityError
from ..core.integrity import check_keys, file_table, mismatches
from ..core.uris import Uri
from ..core.workspace import Workspace
from . import storage

log = logging.getLogger(__name__)

MARKER = "prefops-complete.json"
#: Markers before this format recorded no checksums (1) or no attempt (2); such a checkpoint is not resumed from.
FORMAT = 3
_STEP = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint in storage: the attempt that wrote it, its folder's name, its marker's file table."""

    attempt: int
    name: str
    files: dict[str, str]


class Vanished(Exception):
    """The checkpoint being fetched was pruned meanwhile (by the attempt that wrote it, still running)."""


def step_of(name: str) -> int | None:
    match = _STEP.match(name)
    return int(match.group(1)) if match else None


def complete_steps(names_with_marker: dict[str, bool]) -> list[int]:
    """Steps of the checkpoints whose marker is present, newest first. Pure."""
    steps = [step_of(n) for n, done in names_with_marker.items() if done]
    return sorted((s for s in steps if s is not None), reverse=True)


def _state(remote: Uri) -> dict[str, bool]:
    """Checkpoint folder name -> whether its marker is there."""
    return {
        name: storage.exists(remote.join(name, MARKER))
        for name in storage.list_names(remote)
        if step_of(name) is not None
    }


def attempts_upto(ws: Workspace, upto: int) -> list[int]:
    """The attempts (at most ``upto``) that left a folder under ``<run>/attempts``, newest first."""
    names = storage.list_names(ws.attempts)
    return sorted((int(n) for n in names if n.isdigit() and int(n) <= upto), reverse=True)


def _files(path: Path) -> list[Path]:
    """The files of checkpoint ``path`` a marker covers: all but the marker and fetches in flight, sorted."""
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name != MARKER and not storage.is_part(p))


def sync_share(path: Path, remote: Uri, share: tuple[int, int] = (0, 1)) -> dict[str, str]:
    """Hash (and, for remote storage, upload) this process's share of checkpoint ``path``: every ``share[1]``-th file
    from ``share[0]``, so the processes of a node split the work; files in parallel (``storage.each``). Call once every
    process has saved. Returns ``{relative path: sha256}`` of the share."""
    mine = _files(path)[share[0] :: share[1]]

    def one(f: Path) -> tuple[str, str]:
        rel, digest = f.relative_to(path).as_posix(), storage.sha256_file(f)
        if not remote.is_local:
            storage.upload_file(f, remote.join(path.name, rel), sha256=digest)
        return rel, digest

    table = dict(storage.each(one, mine))
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


def mark_complete(ws: Workspace, path: Path, step: int, files: Mapping[str, str]) -> None:
    """Write the marker (locally, then remotely): called once every rank has saved, hashed and uploaded."""
    doc = {"format": FORMAT, "step": step, "run": ws.run, "attempt": ws.attempt, "files": dict(sorted(files.items()))}
    storage.write_json(Uri("file", str(path / MARKER)), doc)
    if not ws.checkpoints.is_local:
        storage.write_json(ws.checkpoints.join(path.name, MARKER), doc)


def newest(ws: Workspace) -> Checkpoint | None:
    """The checkpoint attempt ``ws.attempt`` resumes from: the newest complete one of the newest attempt (up to this
    one) that has any, its marker checked (:func:`_checked_marker`); None when there is none. Nothing is downloaded
    yet."""
    for attempt in attempts_upto(ws, ws.attempt):
        found = _newest_of(ws, attempt)
        if found is not None:
            return found
    return None


def _newest_of(ws: Workspace, attempt: int) -> Checkpoint | None:
    remote = ws.checkpoints_of(attempt)
    for step in complete_steps(_state(remote)):
        name = f"checkpoint-{step}"
        where = remote.join(name)
        try:
            doc = storage.read_json(where.join(MARKER))
        except ValueError as e:
            raise IntegrityError(f"{where}/{MARKER}: not JSON ({e}); the checkpoint is not loaded") from e
        except FileNotFoundError:
            continue  # pruned since the listing
        table = _checked_marker(doc, str(where), step, ws.run, attempt)
        if table is not None:
            return Checkpoint(attempt, name, table)
        log.warning("%s has a marker of an older format (an older prefops wrote it); not resuming from it", where)
    return None


def _checked_marker(doc: Any, where: str, step: int, run: str, attempt: int) -> dict[str, str] | None:
    version = doc.get("format", 1) if isinstance(doc, dict) else None
    if not isinstance(version, int) or version < FORMAT:
        return None
    said = (doc.get("run"), doc.get("attempt"), doc.get("step"))
    if said != (run, attempt, step):
        raise IntegrityError(
            f"{where}: its completion marker says step {said[2]!r} of run {said[0]!r}, attempt {said[1]!r}, not step "
            f"{step} of this run ({run}), attempt {attempt}: a checkpoint is resumed only from the job's own prefix, "
            "from the folder of the attempt that wrote it. It is not loaded; remove it to go on"
        )
    return file_table(doc.get("files"), f"{where}/{MARKER}")


def fetch_verified(ws: Workspace, found: Checkpoint) -> Path:
    """Checkpoint ``found`` as a local folder holding exactly the files of its table with their recorded sha256
    (downloaded, in parallel, where the local copy differs); :class:`IntegrityError` naming what differs, before
    anything is loaded; :class:`Vanished` when it was pruned meanwhile. The local marker is written once the folder
    checks out."""
    local, remote = storage.local_dir(ws.local_of(found.attempt, "checkpoints")), ws.checkpoints_of(found.attempt)
    path, where = local / found.name, remote.join(found.name)
    if not path.resolve().is_relative_to(local.resolve()):
        raise IntegrityError(f"{where}: its folder {path} leads outside {local}; it is not loaded")
    present = _local_copy(path, where, found.files) if not remote.is_local else _hashes(path)
    problems = mismatches(found.files, present)
    if problems and not storage.exists(where.join(MARKER)):
        raise Vanished(f"{where} was removed while it was being fetched")
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
    """Every file of ``path`` a marker covers, hashed in parallel."""
    return dict(storage.each(lambda f: (f.relative_to(path).as_posix(), storage.sha256_file(f)), _files(path)))


def _local_copy(path: Path, where: Uri, table: Mapping[str, str]) -> dict[str, str]:
    """Make ``path`` hold ``table``'s files, fetching (in parallel) each whose local copy differs; every key under
    ``where`` is checked first. Returns what the folder then holds, hashed."""
    listed = storage.remote_files(where)
    check_keys(listed, str(where))
    (path / MARKER).unlink(missing_ok=True)
    have = _hashes(path) if path.exists() else {}
    for rel in set(have) - set(table):
        (path / rel).unlink()
    wanted = sorted(rel for rel, digest in table.items() if have.get(rel) != digest and rel in listed)
    log.info("downloading %d files of %s", len(wanted), where)
    storage.each(lambda rel: storage.fetch_file(where.join(rel), path / rel), wanted)
    return _hashes(path)


def prune(ws: Workspace, keep: int) -> None:
    """Keep this attempt's ``keep`` newest complete checkpoints (and any newer incomplete one) and delete the rest;
    once it has one, delete the older attempts' checkpoints, which are never resumed from again."""
    local, remote = ws.local("checkpoints"), ws.checkpoints
    complete = complete_steps(_state(remote))
    for step in complete[keep:]:
        name = f"checkpoint-{step}"
        if not remote.is_local:
            storage.remove(remote.join(name))
        shutil.rmtree(local / name, ignore_errors=True)
    if complete:
        for attempt in attempts_upto(ws, ws.attempt - 1):
            if not storage.exists(ws.checkpoints_of(attempt)):
                continue
            log.info("removing the checkpoints of attempt %d, superseded by attempt %d's", attempt, ws.attempt)
            storage.remove(ws.checkpoints_of(attempt))
            shutil.rmtree(ws.local_of(attempt, "checkpoints"), ignore_errors=True)
