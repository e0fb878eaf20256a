"""Object storage against a real S3-compatible server: s3:// sources, cache, checkpoints and exports."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.trainer_jobs import CLI, TINY, error_of, job_doc, run_cli, s3_job, upload_tree

from prefops_trainer.adapters import storage, stores
from prefops_trainer.core.spec import parse_job
from prefops_trainer.inputs import load_inputs
from prefops_trainer.phases import precompute as precompute_phase

pytestmark = pytest.mark.integration


def test_whole_job_with_sources_work_and_output_on_s3(tmp_path, s3):
    server, bucket = s3
    model = upload_tree(server, bucket, TINY / "model", "base/tiny")
    server.client().upload_file(str(TINY / "prefs.jsonl"), bucket, "data/prefs.jsonl")
    job = s3_job(tmp_path, bucket, model={"source": model}, dataset={"source": f"s3://{bucket}/data/prefs.jsonl"})
    env = {**server.env, "PREFOPS_CACHE_DIR": str(tmp_path / "cache")}
    result = run_cli("run", job, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    keys = server.keys(bucket, "models/t/")
    manifest = json.loads(server.get(bucket, "models/t/prefops.json"))
    assert sorted(f"models/t/{f['path']}" for f in manifest["files"]) == [
        k for k in keys if not k.endswith("prefops.json")
    ]
    import hashlib

    for f in manifest["files"]:
        assert hashlib.sha256(server.get(bucket, f"models/t/{f['path']}")).hexdigest() == f["sha256"]
    assert server.keys(bucket, "work/refcache/"), "the reference cache lives in the bucket"
    assert any(k.endswith("checkpoint-4/prefops-complete.json") for k in server.keys(bucket, "work/jobs/"))
    assert not list((tmp_path / "out").glob("*")), "nothing was written to local disk as output"


def precompute_report(tmp_path: Path, name: str, **spec) -> dict:
    return precompute_phase.run(load_inputs(parse_job(job_doc(tmp_path, name, **spec))))


def test_reference_cache_is_shared_by_a_sweep_and_missed_by_any_change_that_moves_the_numbers(tmp_path, s3):
    _server, bucket = s3
    store = {"storage": {"uri": f"s3://{bucket}/work"}}
    first = precompute_report(tmp_path, "a", **store)
    assert first["cacheHit"] is False
    sweep = precompute_report(tmp_path, "b", algorithm={"name": "dpo", "beta": 0.3, "lossType": ["ipo"]}, **store)
    assert sweep["cacheHit"] is True and sweep["splits"]["train"]["key"] == first["splits"]["train"]["key"]

    changed_model = tmp_path / "model-edited"
    import shutil

    shutil.copytree(TINY / "model", changed_model)
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(changed_model / "model.safetensors")
    weights["lm_head.weight"][0, 0] += torch.tensor(1e-3)
    save_file(weights, changed_model / "model.safetensors", metadata={"format": "pt"})
    template = tmp_path / "model-template"
    shutil.copytree(TINY / "model", template)
    (template / "chat_template.jinja").write_text(
        (template / "chat_template.jinja").read_text().replace("<|end|>", "<|end|> .")
    )
    rows = (TINY / "prefs.jsonl").read_text().splitlines()
    rows[5] = json.dumps({**json.loads(rows[5]), "rejected": " no ."})
    (tmp_path / "edited.jsonl").write_text("\n".join(rows) + "\n")

    misses = {
        "model weights": {"model": {"source": str(changed_model)}},
        "chat template": {"model": {"source": str(template)}, "dataset": {"source": str(TINY / "prefs-chat.jsonl")}},
        "dataset row": {"dataset": {"source": str(tmp_path / "edited.jsonl")}},
        "maxLength": {"dataset": {"maxLength": 48}},
    }
    chat_first = precompute_report(tmp_path, "chat", dataset={"source": str(TINY / "prefs-chat.jsonl")}, **store)
    keys = {first["splits"]["train"]["key"], chat_first["splits"]["train"]["key"]}
    for what, spec in misses.items():
        report = precompute_report(tmp_path, what.replace(" ", "-"), **spec, **store)
        assert report["cacheHit"] is False, what
        assert report["splits"]["train"]["key"] not in keys, what
        keys.add(report["splits"]["train"]["key"])


def test_a_partial_cache_is_never_used_and_finished_shards_are_not_recomputed(tmp_path, s3):
    server, bucket = s3
    spec = {"storage": {"uri": f"s3://{bucket}/work"}, "reference": {"workers": 2}}
    inputs = load_inputs(parse_job(job_doc(tmp_path, **spec)))
    precompute_phase.run(inputs, 1, 2)
    cache = inputs.ref_cache("train")
    assert cache.manifest() is None
    from prefops_trainer.phases import train as train_phase

    with pytest.raises(RuntimeError, match=r"incomplete \(shards \[0\] missing\): run the precompute phase first"):
        train_phase.run(inputs)
    key = f"work/refcache/{cache.key}/shard-00001-of-00002.parquet"
    before = server.client().head_object(Bucket=bucket, Key=key)["LastModified"]
    time.sleep(1.1)
    again = precompute_phase.run(inputs, 1, 2)
    assert "pairs" not in again["splits"]["train"], "shard 1 was already there"
    assert server.client().head_object(Bucket=bucket, Key=key)["LastModified"] == before
    precompute_phase.run(inputs, 0, 2)
    assert cache.manifest()["rows"] == 64


def test_checkpoints_sync_to_s3_and_a_restart_on_another_node_resumes(tmp_path, s3):
    server, bucket = s3
    job = s3_job(tmp_path, bucket, training={"maxSteps": 150, "checkpointEverySteps": 10, "perDeviceBatchSize": 4})
    node_a = {**server.env, "PREFOPS_CACHE_DIR": str(tmp_path / "node-a"), "PREFOPS_METRICS_PORT": "off"}
    assert run_cli("precompute", job, env=node_a).returncode == 0
    proc = subprocess.Popen([*CLI, "train", str(job)], env={**os.environ, **node_a},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def remote_markers():
        return [k for k in server.keys(bucket, "work/jobs/") if k.endswith("prefops-complete.json")]

    deadline = time.monotonic() + 300
    while len(remote_markers()) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    newest = max(int(k.split("checkpoint-")[1].split("/")[0]) for k in remote_markers())
    assert newest < 150
    node_b = {**server.env, "PREFOPS_CACHE_DIR": str(tmp_path / "node-b")}
    result = run_cli("train", job, env=node_b)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming from checkpoint-{newest}" in result.stderr
    assert (tmp_path / "node-b").exists() and not list((tmp_path / "node-b").rglob(f"checkpoint-{newest - 10}"))


def medium_model(path: Path) -> Path:
    """The tiny vocabulary on a wider model: ~28 MB of float32 weights, several multipart parts."""
    from prefops_trainer.tiny import build_model, build_tokenizer

    tok = build_tokenizer()
    build_model(len(tok), hidden=512, layers=3).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_interrupted_s3_export_completes_on_rerun_without_duplicates(tmp_path, s3):
    from support.faultproxy import FaultProxy

    server, bucket = s3
    model = medium_model(tmp_path / "medium")
    job = s3_job(
        tmp_path,
        bucket,
        model={"source": str(model)},
        training={"maxSteps": 1},
        output={"uri": f"s3://{bucket}/models/m"},
    )
    env = {**server.env, "PREFOPS_S3_PART_SIZE": str(5 * 2**20), "AWS_MAX_ATTEMPTS": "2", "PREFOPS_RETRY_SECONDS": "2"}
    assert run_cli("precompute", job, env=env).returncode == 0
    assert run_cli("train", job, env=env).returncode == 0
    port = int(server.endpoint.rsplit(":", 1)[1])
    dying = FaultProxy(port, cut_after_bytes=12 * 2**20)  # the link dies in the middle of the weights
    result = run_cli("export", job, env={**env, "AWS_ENDPOINT_URL": dying.endpoint})
    dying.close()
    assert result.returncode == 1, result.stderr[-2000:]
    assert "models/m/prefops.json" not in server.keys(bucket, "models/m/"), "no manifest: the model is incomplete"
    arrived = {k.split("models/m/")[1] for k in server.keys(bucket, "models/m/")}
    assert arrived and "model.safetensors" not in arrived
    assert server.client().list_multipart_uploads(Bucket=bucket).get("Uploads"), "the kill left a multipart upload"

    watching = FaultProxy(port)
    result = run_cli("export", job, env={**env, "AWS_ENDPOINT_URL": watching.endpoint})
    watching.close()
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads(server.get(bucket, "models/m/prefops.json"))
    names = {f["path"] for f in manifest["files"]}
    assert {k.split("models/m/")[1] for k in server.keys(bucket, "models/m/")} == names | {"prefops.json"}
    assert not server.client().list_multipart_uploads(Bucket=bucket).get("Uploads"), "the orphan upload was aborted"
    puts = {
        line.split(b" ")[1].split(b"?")[0].decode().split("models/m/")[-1]
        for line in watching.requests
        if line.startswith((b"PUT", b"POST")) and b"models/m/" in line
    }
    assert not (puts & (arrived - {"README.md"})), "files that had arrived were not sent again"
    assert "model.safetensors" in puts
    import hashlib

    for f in manifest["files"]:
        assert hashlib.sha256(server.get(bucket, f"models/m/{f['path']}")).hexdigest() == f["sha256"]


def test_transient_s3_errors_are_retried_with_backoff(tmp_path, s3):
    from support.faultproxy import FaultProxy

    server, bucket = s3
    port = int(server.endpoint.rsplit(":", 1)[1])
    flaky = FaultProxy(port, throttle_first=3)
    os.environ["AWS_ENDPOINT_URL"] = flaky.endpoint
    stores.forget()
    try:
        uri = storage.Uri("s3", f"{bucket}/probe/hello.json")
        storage.write_json(uri, {"hello": "world"})
        assert storage.read_json(uri) == {"hello": "world"}
    finally:
        flaky.close()
        os.environ["AWS_ENDPOINT_URL"] = server.endpoint
        stores.forget()
    assert flaky.throttled == 3, "three requests were answered 503 SlowDown, and the write still succeeded"


def faulty(port: int, fault: str):
    """A fault proxy in front of ``port``: every connection answered 503 SlowDown, or the server away (reset)."""
    from support.faultproxy import FaultProxy

    proxy = FaultProxy(port, throttle_first=10**6 if fault == "503 SlowDown" else 0)
    if fault == "reset":
        proxy.go_away()
    return proxy


@pytest.mark.parametrize("fault", ["503 SlowDown", "reset"])
def test_an_s3_outage_that_outlasts_the_retries_exits_1_with_one_paragraph_not_2(tmp_path, s3, fault):
    server, bucket = s3
    model = upload_tree(server, bucket, TINY / "model", "base/tiny")
    proxy = faulty(int(server.endpoint.rsplit(":", 1)[1]), fault)
    env = {**server.env, "AWS_ENDPOINT_URL": proxy.endpoint, "AWS_MAX_ATTEMPTS": "2", "PREFOPS_RETRY_SECONDS": "10",
           "PREFOPS_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip
    result = run_cli("precompute", s3_job(tmp_path, bucket, model={"source": model}), env=env)
    proxy.close()
    error = error_of(result, code=1)
    assert f"s3://{bucket}/base/tiny: still failing after" in error
    assert "This is an outage, not a mistake in the job" in error
    assert "retrying in" in result.stderr, "backed off and tried again"
    assert proxy.throttled + proxy.refused > 2 * 2, "more connections than botocore's own two attempts make"


@pytest.mark.parametrize(
    ("fault", "source"),
    [("503 SlowDown", "model"), ("reset", "model"), ("503 SlowDown", "dataset")],
    ids=["model-503", "model-reset", "dataset-503"],
)
def test_a_hub_outage_is_retried_with_backoff_then_exits_1_not_2(tmp_path, tmp_job, fault, source):
    from support.kube import free_port

    proxy = faulty(free_port(), fault)  # nothing behind it: the Hub is never reached, nothing leaves the machine
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": proxy.endpoint, "HF_HOME": str(tmp_path / "hf"),
           "PREFOPS_RETRY_SECONDS": "6"}  # fmt: skip
    result = run_cli("precompute", tmp_job(**{source: {"source": "hf://acme/tiny"}}), env=env)
    proxy.close()
    error = error_of(result, code=1)
    what = "fetching" if source == "model" else "loading"
    assert f"spec.{source}.source: {what} hf://acme/tiny from the Hugging Face Hub: still failing after" in error
    assert "This is an outage, not a mistake in the job" in error
    assert result.stderr.lower().count("retrying in") >= 2, "backed off and tried again (ours, or the Hub client's)"
    assert proxy.throttled + proxy.refused >= 3


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def put_keys(requests: list[bytes], prefix: str) -> set[str]:
    """Keys under ``prefix`` that the proxied requests wrote to (PUT, or POST of a multipart upload)."""
    lines = [r.decode() for r in list(requests) if r.startswith((b"PUT", b"POST"))]
    paths = {line.split(" ")[1].split("?")[0] for line in lines}
    return {p.split(prefix, 1)[1] for p in paths if prefix in p}


def test_an_export_killed_mid_upload_publishes_nothing_and_its_rerun_sends_only_what_had_not_arrived(tmp_path, s3):
    from support.faultproxy import FaultProxy

    server, bucket = s3
    job = s3_job(tmp_path, bucket, model={"source": str(medium_model(tmp_path / "medium"))}, training={"maxSteps": 1},
                 output={"uri": f"s3://{bucket}/models/m"})  # fmt: skip
    env = {**os.environ, **server.env, "PREFOPS_S3_PART_SIZE": str(5 * 2**20), "PREFOPS_METRICS_PORT": "off"}
    assert run_cli("precompute", job, env=env).returncode == 0
    assert run_cli("train", job, env=env).returncode == 0
    port = int(server.endpoint.rsplit(":", 1)[1])
    # three writes under the model's prefix go through; the export is frozen on the next request and killed there
    first = FaultProxy(port, hold_after_writes=3, write_prefix=f"/{bucket}/models/m/".encode())
    proc = subprocess.Popen([*CLI, "export", str(job)], env={**env, "AWS_ENDPOINT_URL": first.endpoint},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: first.held or proc.poll() is not None, timeout=300, what="the export to reach the 4th write")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        first.close()
    assert proc.returncode == -signal.SIGKILL, "killed while uploading, not finished"
    stored = {k.split("models/m/")[1] for k in server.keys(bucket, "models/m/")}
    assert "prefops.json" not in stored, "no manifest: the model does not look complete"
    arrived = stored
    assert arrived and "model.safetensors" not in arrived, "some files, not the weights, had arrived before the kill"

    watching = FaultProxy(port)
    result = run_cli("export", job, env={**env, "AWS_ENDPOINT_URL": watching.endpoint})
    watching.close()
    assert result.returncode == 0, result.stderr[-2000:]
    sent_again = put_keys(watching.requests, "models/m/")
    assert not (sent_again & arrived), f"re-sent files that had arrived: {sorted(sent_again & arrived)}"
    assert "model.safetensors" in sent_again
    manifest = json.loads(server.get(bucket, "models/m/prefops.json"))
    assert {k.split("models/m/")[1] for k in server.keys(bucket, "models/m/")} == {
        f["path"] for f in manifest["files"]
    } | {"prefops.json"}
    import hashlib

    for f in manifest["files"]:
        assert hashlib.sha256(server.get(bucket, f"models/m/{f['path']}")).hexdigest() == f["sha256"], f["path"]


#: How long S3 stays away: far longer than botocore's and s3fs's own quick retries, and than any retry without
#: backoff, yet short enough for a test.
OUTAGE_S = 45


def test_s3_away_for_most_of_a_minute_during_a_checkpoint_upload_loses_nothing(tmp_path, s3):
    import hashlib
    import re

    from support.faultproxy import FaultProxy

    server, bucket = s3
    job = s3_job(tmp_path, bucket, training={"maxSteps": 40, "checkpointEverySteps": 10, "checkpointsToKeep": 10,
                                             "perDeviceBatchSize": 4})  # fmt: skip
    env = {**os.environ, **server.env, "PREFOPS_CACHE_DIR": str(tmp_path / "cache"), "PREFOPS_METRICS_PORT": "off"}
    assert run_cli("precompute", job, env=env).returncode == 0
    proxy = FaultProxy(int(server.endpoint.rsplit(":", 1)[1]), away_at=b"/checkpoints/checkpoint-10/")
    log = tmp_path / "train.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*CLI, "train", str(job)], stdout=out, stderr=subprocess.STDOUT,
                                env={**env, "AWS_ENDPOINT_URL": proxy.endpoint, "AWS_MAX_ATTEMPTS": "2"})  # fmt: skip
        try:
            wait_for(lambda: proxy.went_away_at is not None or proc.poll() is not None, 300, "checkpoint-10's upload")
            wait_for(lambda: (time.monotonic() - proxy.went_away_at >= OUTAGE_S and proxy.refused >= 4) or
                     proc.poll() is not None, OUTAGE_S + 120, "the outage")  # fmt: skip
            proxy.come_back()
            proc.wait(timeout=600)
        finally:
            proc.kill()
            proxy.close()
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    retries = [float(d) for d in re.findall(r"checkpoint-10/\S*: .*; retrying in ([\d.]+) s", text)]
    assert len(retries) >= 3 and retries[-1] > 2 * retries[0], f"backed off, again and again: {retries}"
    assert proxy.refused >= 4, "the trainer kept trying while S3 was away"

    for step in (10, 20, 30, 40):  # nothing lost: every checkpoint whole, as its marker records it
        prefix = next(
            k for k in server.keys(bucket, "work/jobs/") if k.endswith(f"checkpoint-{step}/prefops-complete.json")
        )
        prefix = prefix.rsplit("/", 1)[0]
        marker = json.loads(server.get(bucket, f"{prefix}/prefops-complete.json"))
        assert set(marker["files"]) == {k[len(prefix) + 1 :] for k in server.keys(bucket, prefix + "/")} - {
            "prefops-complete.json"
        }
        for rel, digest in marker["files"].items():
            assert hashlib.sha256(server.get(bucket, f"{prefix}/{rel}")).hexdigest() == digest, rel
    assert any(k.endswith("/trained/prefops-trained.json") for k in server.keys(bucket, "work/jobs/"))
    report = json.loads(
        server.get(bucket, next(k for k in server.keys(bucket, "work/jobs/") if k.endswith("phases/train.json")))
    )
    assert report["steps"] == 40


def test_a_train_rerun_replaces_a_stale_file_of_the_same_size_under_trained(tmp_path, s3):
    server, bucket = s3
    job = s3_job(tmp_path, bucket, training={"maxSteps": 2})
    env = {**server.env, "PREFOPS_CACHE_DIR": str(tmp_path / "cache")}
    assert run_cli("precompute", job, env=env).returncode == 0
    assert run_cli("train", job, env=env).returncode == 0
    key = next(k for k in server.keys(bucket, "work/jobs/") if k.endswith("/trained/adapter_model.safetensors"))
    stale = bytearray(server.get(bucket, key))
    stale[-1] ^= 0x01  # what an earlier attempt left: same size, other weights
    server.client().put_object(Bucket=bucket, Key=key, Body=bytes(stale))
    assert run_cli("train", job, env=env).returncode == 0
    saved = next((tmp_path / "cache").rglob("trained/adapter_model.safetensors")).read_bytes()
    assert server.get(bucket, key) == saved, "export would have published the stale weights"
