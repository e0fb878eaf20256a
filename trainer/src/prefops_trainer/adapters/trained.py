"""The trained weights the train phase hands to export, checked before export publishes anything.

One attempt of the train phase writes ``<run>/attempts/<attempt>/trained/`` (the adapter or the full model, and the
tokenizer), its report ``<run>/attempts/<attempt>/phases/train.json``, and last the marker
``trained/prefops-trained.json``: the run, the attempt, what export needs (steps, final metrics, the final
evaluation the gate reads) and the sha256 of every file of ``trained/`` and of the report. Export takes the attempt
the operator names and refuses (:class:`IntegrityError`, exit 2, naming the file) a marker of another run or attempt,
a file changed, added or missing, a report that is not the one recorded, and a marker whose steps, metrics or
evaluation differ from that report. As for checkpoints, the marker lives beside what it vouches for: this catches
corruption, an older attempt's or another run's files, and edits of a file or of the marker alone, not a writer who
rewrites all of them consistently (docs/operator.md, Security).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ..core.errors import IntegrityError
from ..core.integrity import file_table, is_sha256, mismatches
from ..core.reports import Handed, TrainReport
from ..core.workspace import TRAINED_MARKER, Workspace
from . import storage

#: Markers before this format recorded no checksums; export refuses them.
FORMAT = 2
#: What the marker carries of the train report, for export (held equal to the report).
HANDED = ("steps", "metrics", "evaluation")


@dataclass(frozen=True)
class Trained:
    """A checked marker of one attempt's trained weights.

    Attributes:
        where: the ``trained/`` folder in storage.
        files: relative path -> sha256 of every file in it but the marker.
        handed: steps, metrics and (when the job evaluates) the final evaluation.
        report: the attempt's train report, as recorded.
    """

    where: str
    files: dict[str, str]
    handed: Handed
    report: TrainReport


def hand_over(ws: Workspace, local: Path, report: Mapping[str, object], sent: Mapping[str, str] | None = None) -> None:
    """Attempt ``ws.attempt``'s weights in ``local`` to storage (files not already there with the same sha256, in
    parallel), then its report, then the marker, last, recording also ``sent``: files other ranks stored themselves
    (relative path -> sha256; ZeRO-3 partitions written on other nodes). Rank 0 calls it once every rank has saved."""
    files = dict(sent or {})
    files |= dict(storage.each(lambda f: (f.relative_to(local).as_posix(), storage.sha256_file(f)), _files(local)))
    if not ws.trained.is_local:
        storage.each(lambda rel: _upload(local / rel, ws, rel, files[rel]), sorted(files))
    data = storage.json_bytes(report)
    storage.write_bytes(ws.report("train"), data)
    doc = {"format": FORMAT, "run": ws.run, "attempt": ws.attempt, "files": files}
    doc["report"] = hashlib.sha256(data).hexdigest()
    storage.write_json(ws.trained_marker, doc | {k: report[k] for k in HANDED if k in report})


def withdraw(ws: Workspace) -> None:
    """Remove attempt ``ws.attempt``'s marker before its weights are written again (a local re-run), so no
    complete-looking ``trained/`` exists while its files change."""
    if storage.exists(ws.trained_marker):
        storage.remove(ws.trained_marker)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != TRAINED_MARKER)


def _upload(path: Path, ws: Workspace, rel: str, digest: str) -> None:
    if storage.stored_sha256(ws.trained.join(rel)) != digest:
        storage.upload_file(path, ws.trained.join(rel), sha256=digest)


def newest_attempt(ws: Workspace) -> int | None:
    """The newest attempt whose ``trained/`` has its marker, or None."""
    attempts = sorted((int(n) for n in storage.list_names(ws.attempts) if n.isdigit()), reverse=True)
    return next((a for a in attempts if storage.exists(ws.at(a).trained_marker)), None)


def result(ws: Workspace) -> Trained:
    """Attempt ``ws.attempt``'s marker, checked against the run, the attempt and the train report it records;
    RuntimeError when there is none (the train phase did not finish), :class:`IntegrityError` naming the problem."""
    where = str(ws.trained_marker)
    try:
        doc = storage.read_json_if_exists(ws.trained_marker)
    except ValueError as e:
        raise IntegrityError(f"{where}: not JSON ({e}); nothing of {ws.trained} is published") from e
    if doc is None:
        raise RuntimeError(f"no finished training result at {ws.trained}: run the train phase first")
    _check_identity(doc, where, ws)
    files = file_table(doc.get("files"), where)
    report = _recorded_report(ws, doc.get("report"), where)
    handed = {k: doc[k] for k in HANDED if k in doc}
    differ = [k for k in HANDED if handed.get(k) != report.get(k)]
    if differ:
        raise IntegrityError(
            f"{where}: does not match the train report it records ({ws.report('train')}) in {', '.join(differ)}: "
            f"the marker was edited after it was written. Nothing of {ws.trained} is published"
        )
    return Trained(str(ws.trained), files, cast(Handed, handed), cast(TrainReport, report))


def _check_identity(doc: Any, where: str, ws: Workspace) -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("format"), int) or doc["format"] < FORMAT:
        raise IntegrityError(
            f"{where}: records no checksums (an older prefops wrote it, or it is not a marker); nothing of "
            f"{ws.trained} is published. Run the train phase again"
        )
    said = (doc.get("run"), doc.get("attempt"))
    if said != (ws.run, ws.attempt):
        raise IntegrityError(
            f"{where}: says run {said[0]!r}, attempt {said[1]!r}, not run {ws.run!r}, attempt {ws.attempt}: weights "
            "are published only from the folder of the attempt that trained them. Nothing is published"
        )


def _recorded_report(ws: Workspace, digest: Any, where: str) -> dict[str, Any]:
    """The train report, when its sha256 is the one the marker records."""
    uri = ws.report("train")
    if not is_sha256(digest):
        raise IntegrityError(f"{where}: the checksum of the train report is not a sha256 ({digest!r:.80})")
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise IntegrityError(f"{uri}: missing, while {where} records it; nothing is published") from None
    found = hashlib.sha256(data).hexdigest()
    if found != digest:
        raise IntegrityError(
            f"{uri}: sha256 {found[:16]}…, recorded {digest[:16]}… in {where}: it was altered after it was written. "
            "Nothing is published"
        )
    report: dict[str, Any] = storage.json_loads(data, str(uri))
    return report


def fetch(ws: Workspace, trained: Trained) -> Path:
    """The weights of ``trained`` as a local folder (downloaded when remote) holding exactly the files its marker
    lists, each with its sha256; :class:`IntegrityError` naming every file that differs, before anything is read."""
    target = ws.trained
    if target.is_local:
        local = Path(target.path)
    else:
        local = storage.download_dir(target, storage.local_dir(ws.local("trained")))
    found = dict(storage.each(lambda f: (f.relative_to(local).as_posix(), storage.sha256_file(f)), _files(local)))
    problems = mismatches(trained.files, found)
    if problems:
        raise IntegrityError(
            f"{target} does not match its marker {TRAINED_MARKER} ({'; '.join(problems[:5])}"
            f"{'; …' if len(problems) > 5 else ''}): it was altered after the train phase wrote it, and nothing of "
            "it is published"
        )
    return local
