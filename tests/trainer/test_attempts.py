"""The exact cases of attempts, fencing and the launcher's exit (issue 19): which attempt's checkpoint a restart resumes
from, what export takes, how the ranks' words become the pod's exit code, the grace torchrun gets. Fast: no training
(checkpoint folders are written by hand, as the trainer writes them, on local storage)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from support.trainer_jobs import job_doc

from prefops_trainer import launch
from prefops_trainer.adapters import checkpoints, storage
from prefops_trainer.core.errors import IntegrityError, Interrupted, SpecError, UserError
from prefops_trainer.core.spec import parse_job
from prefops_trainer.core.workspace import Workspace, attempt_of, trained_attempt_of


def workspace(tmp_path: Path, attempt: int) -> Workspace:
    return Workspace.for_job(parse_job(job_doc(tmp_path)), tmp_path / "cache", attempt)


def save(ws: Workspace, step: int, attempt: int | None = None, marker_attempt: int | None = None) -> Path:
    """A checkpoint of ``step`` written by ``attempt`` (default ``ws.attempt``), marked as the trainer marks it."""
    attempt = ws.attempt if attempt is None else attempt
    folder = ws.local_of(attempt, "checkpoints") / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(f"{attempt}:{step}".encode())
    files = {"weights.bin": hashlib.sha256((folder / "weights.bin").read_bytes()).hexdigest()}
    said = attempt if marker_attempt is None else marker_attempt
    doc = {"format": checkpoints.FORMAT, "run": ws.run, "attempt": said, "step": step, "files": files}
    (folder / checkpoints.MARKER).write_text(json.dumps(doc))
    return folder


def test_attempts_come_from_the_environment_and_export_needs_the_operators_word_on_a_cluster():
    assert attempt_of({}) == 0 and attempt_of({"PREFOPS_ATTEMPT": "7"}) == 7
    assert trained_attempt_of({}) == 0, "local mode: the run's own"
    assert trained_attempt_of({"PREFOPS_ATTEMPT": "9", "PREFOPS_TRAINED_ATTEMPT": "7"}) == 7
    assert trained_attempt_of({"PREFOPS_ATTEMPT": "9"}) is None, "an operator's pod that names none: look it up"
    with pytest.raises(SpecError, match=r"^PREFOPS_ATTEMPT: must be a whole number >= 0 .*, got '-1'"):
        attempt_of({"PREFOPS_ATTEMPT": "-1"})


def test_each_attempt_writes_under_its_own_folder(tmp_path):
    ws = workspace(tmp_path, 4)
    root = str(ws.root)
    assert str(ws.checkpoints) == f"{root}/attempts/4/checkpoints"
    assert str(ws.trained_marker) == f"{root}/attempts/4/trained/prefops-trained.json"
    assert str(ws.report("train")) == f"{root}/attempts/4/phases/train.json"
    assert str(ws.report("export")) == f"{root}/phases/export.json", "the other phases' reports are the run's"
    assert str(ws.at(2).trained) == f"{root}/attempts/2/trained"


def test_a_restart_resumes_from_the_newest_attempt_that_saved_a_checkpoint_whatever_older_ones_saved_since(tmp_path):
    ws = workspace(tmp_path, 3)
    save(ws, 20, attempt=1)
    save(ws, 80, attempt=1)  # an older attempt still alive, further along its own path
    save(ws, 40, attempt=2)
    save(ws, 30, attempt=2)
    found = checkpoints.newest(ws)
    assert found is not None and (found.attempt, found.name) == (2, "checkpoint-40")
    assert checkpoints.newest(ws.at(1)).name == "checkpoint-80", "an attempt never looks at newer ones"
    assert checkpoints.newest(workspace(tmp_path / "other", 3)) is None


def test_an_attempt_without_a_checkpoint_of_its_own_resumes_from_the_one_before(tmp_path):
    ws = workspace(tmp_path, 5)
    save(ws, 10, attempt=2)
    (ws.local_of(4, "checkpoints") / "checkpoint-12").mkdir(parents=True)  # attempt 4 died mid-save: no marker
    found = checkpoints.newest(ws)
    assert found is not None and (found.attempt, found.name) == (2, "checkpoint-10")


def test_a_checkpoint_copied_into_another_attempts_folder_is_refused(tmp_path):
    ws = workspace(tmp_path, 3)
    folder = save(ws, 10, attempt=2, marker_attempt=1)
    with pytest.raises(IntegrityError, match=rf"^{folder}: its completion marker says step 10 of run .*, attempt 1, "):
        checkpoints.newest(ws)


def test_once_an_attempt_has_a_checkpoint_it_prunes_the_older_attempts_and_only_its_own_beyond_the_limit(tmp_path):
    ws = workspace(tmp_path, 3)
    save(ws, 10, attempt=1)
    save(ws, 20, attempt=2)
    checkpoints.prune(ws, keep=2)
    assert checkpoints.newest(ws).attempt == 2, "nothing removed while attempt 3 has no checkpoint"
    for step in (30, 40, 50):
        save(ws, step)
    checkpoints.prune(ws, keep=2)
    left = sorted(p.relative_to(ws.local_root).as_posix() for p in ws.local_root.rglob("checkpoint-*"))
    assert left == ["attempts/3/checkpoints/checkpoint-40", "attempts/3/checkpoints/checkpoint-50"]


def test_a_fetched_checkpoint_pruned_meanwhile_is_passed_over_not_refused(tmp_path):
    ws = workspace(tmp_path, 2)
    folder = save(ws, 10, attempt=1)
    found = checkpoints.newest(ws)
    (folder / "weights.bin").unlink()
    (folder / checkpoints.MARKER).unlink()
    with pytest.raises(checkpoints.Vanished):
        checkpoints.fetch_verified(ws, found)


def test_transfers_run_in_parallel_keep_their_order_and_raise_the_first_error():
    assert storage.each(lambda n: n * n, range(20)) == [n * n for n in range(20)]

    def fail_on_three(n: int) -> int:
        if n == 3:
            raise FileNotFoundError("three")
        return n

    with pytest.raises(FileNotFoundError, match="three"):
        storage.each(fail_on_three, range(10))


WORDS = launch.RankWords


@pytest.mark.parametrize(
    ("code", "words", "signalled", "expected"),
    [
        (0, WORDS((), ()), True, 0),
        (1, WORDS(("bad spec",), ("stopped",)), True, UserError),
        (1, WORDS((), ("stopped at 7", "stopped at 7")), False, Interrupted),
        (1, WORDS((), ("stopped at 7",)), False, 1),
        (1, WORDS((), ()), True, Interrupted),
        (-9, WORDS((), ()), False, -9),
    ],
    ids=["done", "user-error-first", "all-ranks-stopped", "one-rank-stopped", "signalled", "crash"],
)
def test_the_ranks_words_make_the_pods_exit(code, words, signalled, expected):
    if isinstance(expected, int):
        assert launch.outcome(code, words, 2, signalled) == expected
    else:
        with pytest.raises(expected):
            launch.outcome(code, words, 2, signalled)


def test_torchrun_waits_the_grace_less_the_launchers_margin_and_the_rendezvous_the_startup_deadline(tmp_path):
    job = parse_job(job_doc(tmp_path, startupDeadlineSeconds=90, resources={"terminationGracePeriodSeconds": 60}))
    assert launch.grace_seconds(job, {}) == 60, "local mode: the spec's grace period"
    assert launch.shutdown_timeout(launch.grace_seconds(job, {"PREFOPS_TERMINATION_GRACE_SECONDS": "120"})) == 115
    with pytest.raises(SpecError, match=r"^PREFOPS_TERMINATION_GRACE_SECONDS: must be a whole number of seconds"):
        launch.grace_seconds(job, {"PREFOPS_TERMINATION_GRACE_SECONDS": "0"})
    topo = launch.Topology(1, 0, 2, "127.0.0.1", 29500)
    cmd = launch.torchrun_command(topo, tmp_path / "job.yaml", job, 120)
    assert "--shutdown-timeout=115" in cmd and "--rdzv-conf=timeout=90" in cmd


def test_without_the_operators_word_export_looks_up_the_newest_attempt_with_complete_trained_weights(tmp_path):
    from prefops_trainer.adapters import trained

    ws = workspace(tmp_path, 9)
    assert trained.newest_attempt(ws) is None
    for attempt, complete in ((2, True), (3, True), (4, False)):  # attempt 4 died before its marker
        folder = ws.local_of(attempt, "trained")
        folder.mkdir(parents=True)
        if complete:
            (folder / "prefops-trained.json").write_text("{}")
    assert trained.newest_attempt(ws) == 3
