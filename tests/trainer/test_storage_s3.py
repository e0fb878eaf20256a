"""Object storage against a real S3-compatible server: s3:// sources, cache, checkpoints and exports."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from trainer_jobs import CLI, TINY, job_doc, run_cli

from prefops_trainer.adapters import storage
from prefops_trainer.core.spec import parse_job
from prefops_trainer.inputs import load_inputs
from prefops_trainer.phases import precompute as precompute_phase

pytestmark = pytest.mark.integration


def upload_tree(server, bucket: str, local: Path, prefix: str) -> str:
    client = server.client()
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local).as_posix()}")
    return f"s3://{bucket}/{prefix}"


def s3_job(tmp_path: Path, bucket: str, name: str = "t", **spec) -> Path:
    import yaml

    base = {
        "output": {"uri": f"s3://{bucket}/models/{name}"},
        "storage": {"uri": f"s3://{bucket}/work"},
    }
    doc = job_doc(tmp_path, name, **{**base, **spec})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


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
    env = {**server.env, "PREFOPS_S3_PART_SIZE": str(5 * 2**20), "AWS_MAX_ATTEMPTS": "2"}
    assert run_cli("precompute", job, env=env).returncode == 0
    assert run_cli("train", job, env=env).returncode == 0
    port = int(server.endpoint.rsplit(":", 1)[1])
    dying = FaultProxy(port, cut_after_bytes=12 * 2**20)  # the link dies in the middle of the weights
    result = run_cli("export", job, env={**env, "AWS_ENDPOINT_URL": dying.endpoint})
    dying.close()
    assert result.returncode == 1, result.stderr[-2000:]
    assert "models/m/prefops.json" not in server.keys(bucket, "models/m/"), "no manifest: the model is incomplete"
    arrived = {k.split("models/m/")[1] for k in server.keys(bucket, "models/m/")} - {".prefops-upload.json"}
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
    storage._s3.cache_clear()
    try:
        uri = storage.Uri("s3", f"{bucket}/probe/hello.json")
        storage.write_json(uri, {"hello": "world"})
        assert storage.read_json(uri) == {"hello": "world"}
    finally:
        flaky.close()
        os.environ["AWS_ENDPOINT_URL"] = server.endpoint
        storage._s3.cache_clear()
    assert flaky.throttled == 3, "three requests were answered 503 SlowDown, and the write still succeeded"
