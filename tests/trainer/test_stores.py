"""The storage seam (issue 20): one behaviour suite run against every store, the local filesystem and the real S3
server the tests start, so a store added later (``gs``) is held to the same contract by adding its backend here."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from prefops_trainer.adapters import storage
from prefops_trainer.adapters.stores import STORES, Store, store_for
from prefops_trainer.core.rules.schemes import SCHEMES
from prefops_trainer.core.uris import Uri

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Backend:
    """A store, a fresh folder (prefix) of it, and how to leave and see an upload a killed process left."""

    scheme: str
    root: str
    leave_unfinished: Callable[[str], None]  # an upload of this path, killed part-way
    unfinished: Callable[[], list[str]]  # what killed uploads left under root

    @property
    def store(self) -> Store:
        return store_for(self.scheme)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"


def local_backend(tmp_path: Path) -> Backend:
    root = tmp_path / "store"
    root.mkdir()

    def leave_unfinished(path: str) -> None:
        """A real put killed with SIGKILL mid-copy: its source is a pipe that delivers 9 MiB (more than one 8 MiB copy
        chunk) and then waits."""
        fifo = tmp_path / "source.fifo"
        os.mkfifo(fifo)
        code = "import sys; from pathlib import Path; from prefops_trainer.adapters.stores.local import LocalStore; "
        code += "LocalStore().put(Path(sys.argv[1]), sys.argv[2], None)"
        proc = subprocess.Popen([sys.executable, "-c", code, str(fifo), path], env={**os.environ, "PYTHONPATH": (
            f"{ROOT / 'trainer' / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")})  # fmt: skip
        with fifo.open("wb") as feed:
            feed.write(b"x" * 9 * 2**20)
            feed.flush()
            deadline = time.monotonic() + 60
            while not any(p.stat().st_size for p in root.rglob(".*.tmp")) and proc.poll() is None:
                assert time.monotonic() < deadline, "the put never wrote its temporary file"
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def unfinished() -> list[str]:
        return sorted(p.relative_to(root).as_posix() for p in root.rglob(".*") if p.is_file())

    return Backend("file", str(root), leave_unfinished, unfinished)


def s3_backend(s3) -> Backend:
    server, bucket = s3
    client = server.client()

    def leave_unfinished(path: str) -> None:
        """What a process killed between two parts of a multipart upload leaves: an upload with one part."""
        key = path.split("/", 1)[1]
        upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * 2**20)

    def unfinished() -> list[str]:
        return sorted(u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))

    return Backend("s3", f"{bucket}/store", leave_unfinished, unfinished)


@pytest.fixture(params=["file", "s3"])
def backend(request, tmp_path) -> Backend:
    if request.param == "file":
        return local_backend(tmp_path)
    return s3_backend(request.getfixturevalue("s3"))


def written(tmp_path: Path, data: bytes) -> tuple[Path, str]:
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_a_put_file_comes_back_whole_with_the_checksum_it_was_put_with(backend, tmp_path):
    data = os.urandom(3 * 2**20 + 17)
    local, digest = written(tmp_path, data)
    store, where = backend.store, backend.path("model/weights.bin")
    assert store.stored_sha256(where) is None, "nothing is there yet"
    store.put(local, where, digest)
    assert store.stored_sha256(where) == digest
    fetched = tmp_path / "fetched.bin"
    store.fetch(where, fetched)
    assert fetched.read_bytes() == data
    assert store.stat(where).size == len(data) and store.stat(where).version


def test_a_write_replaces_an_object_whole_and_a_new_version_is_seen(backend):
    store, where = backend.store, backend.path("phases/train.json")
    store.write(where, b"first")
    before = store.stat(where).version
    store.write(where, b"the second one")
    assert store.read(where) == b"the second one"
    assert store.stat(where).version != before


def test_listing_names_the_entries_under_a_folder_and_every_file_below_it(backend):
    store = backend.store
    for rel, body in {"a.json": b"1", "sub/b.bin": b"22", "sub/deeper/c.txt": b"333"}.items():
        store.write(backend.path(rel), body)
    assert store.names(backend.root) == ["a.json", "sub"]
    assert {rel: f.size for rel, f in store.files(backend.root).items()} == {
        "a.json": 1,
        "sub/b.bin": 2,
        "sub/deeper/c.txt": 3,
    }
    assert (store.kind(backend.path("sub")), store.kind(backend.path("a.json"))) == ("directory", "file")
    missing = backend.path("nothing-here")
    assert store.names(missing) == [] and store.files(missing) == {}
    assert store.kind(missing) is None and not store.exists(missing)


def test_remove_takes_a_folder_with_everything_under_it_and_nothing_there_is_no_error(backend):
    store = backend.store
    store.write(backend.path("ckpt/checkpoint-1/a"), b"a")
    store.write(backend.path("ckpt/checkpoint-1/deep/b"), b"b")
    store.write(backend.path("ckpt/checkpoint-2/a"), b"a")
    store.remove(backend.path("ckpt/checkpoint-1"))
    store.remove(backend.path("ckpt/checkpoint-1"))
    assert store.names(backend.path("ckpt")) == ["checkpoint-2"]
    assert not store.exists(backend.path("ckpt/checkpoint-1/a"))


def test_abort_drops_what_a_killed_upload_left_and_keeps_every_finished_object(backend):
    store = backend.store
    store.write(backend.path("models/m/README.md"), b"finished")
    backend.leave_unfinished(backend.path("models/m/model.safetensors"))
    assert backend.unfinished(), "the killed upload left something behind"
    assert store.abort_multipart(backend.path("models")) == 1
    assert backend.unfinished() == []
    assert store.abort_multipart(backend.path("models")) == 0
    assert sorted(store.files(backend.path("models"))) == ["m/README.md"]
    assert store.read(backend.path("models/m/README.md")) == b"finished"


def test_what_is_absent_is_file_not_found_and_never_an_outage(backend, tmp_path):
    store, missing = backend.store, backend.path("no/such/object")
    for call in (
        lambda: store.read(missing),
        lambda: store.stat(missing),
        lambda: store.fetch(missing, tmp_path / "x"),
    ):
        with pytest.raises(FileNotFoundError) as caught:
            call()
        assert not store.transient(caught.value)


def test_through_the_storage_layer_a_missing_object_fails_at_once_without_retrying(backend, caplog):
    uri = Uri(backend.scheme, backend.path("absent.json"))
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(uri)
    assert "retrying" not in caplog.text
    assert storage.read_json_if_exists(uri) is None


@pytest.mark.parametrize("fault", ["503 SlowDown", "reset"])
def test_an_s3_outage_is_transient_and_the_storage_layer_rides_it_out(s3, monkeypatch, fault):
    from support.faultproxy import FaultProxy

    from prefops_trainer.adapters import stores

    server, bucket = s3
    port = int(server.endpoint.rsplit(":", 1)[1])
    down = FaultProxy(port, throttle_first=10**6 if fault == "503 SlowDown" else 0)
    if fault == "reset":
        down.go_away()
    flaky = FaultProxy(port, throttle_first=2)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("PREFOPS_RETRY_SECONDS", "30")
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", down.endpoint)
        stores.forget()
        with pytest.raises(Exception) as caught:
            store_for("s3").read(f"{bucket}/x")
        assert store_for("s3").transient(caught.value), f"{fault} is an outage: {caught.value!r}"
        monkeypatch.setenv("AWS_ENDPOINT_URL", flaky.endpoint)
        stores.forget()
        storage.write_bytes(Uri("s3", f"{bucket}/after-the-outage"), b"arrived")
    finally:
        down.close()
        flaky.close()
        stores.forget()
    assert flaky.throttled == 2, "two requests were answered 503 SlowDown, and the write went on"
    assert server.get(bucket, "after-the-outage") == b"arrived"


def test_a_large_s3_put_goes_up_in_parts(s3, tmp_path, monkeypatch):
    from prefops_trainer.adapters.stores import s3 as s3_store

    _server, bucket = s3
    monkeypatch.setattr(s3_store, "PART_SIZE", 5 * 2**20)
    data = os.urandom(11 * 2**20)
    local, digest = written(tmp_path, data)
    store_for("s3").put(local, f"{bucket}/big.bin", digest)
    assert store_for("s3").stat(f"{bucket}/big.bin").version.endswith("-3"), "a multipart ETag: three parts"
    assert store_for("s3").stored_sha256(f"{bucket}/big.bin") == digest


def test_every_storage_scheme_of_the_table_has_a_store_and_only_those():
    assert set(STORES) == {name for name, row in SCHEMES.items() if row.storage}


SCHEME_BRANCH = re.compile(r"""scheme\s*[!=]=|\.startswith\(\s*["'](s3|hf|file|gs)://|==\s*["'](s3|hf)["']""")


def test_no_module_branches_on_a_scheme_name_but_the_table():
    """Whoever needs to know what a scheme can do asks ``core.rules.schemes`` (or ``Uri.is_local``/``is_hub``)."""
    sources = [*(ROOT / "trainer" / "src").rglob("*.py"), *(ROOT / "operator" / "src").rglob("*.py")]
    found = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in sources
        if p.name != "schemes.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if SCHEME_BRANCH.search(line)
    ]
    assert found == []
