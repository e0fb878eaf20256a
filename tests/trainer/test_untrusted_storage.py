"""Whatever comes back from object storage is untrusted input (issue 11), tried against the real S3 server: keys that
would escape their folder, objects replaced behind a local copy, tampered checkpoints and reference-cache shards."""

import hashlib
import json
from pathlib import Path

import pytest
from support.trainer_jobs import TINY, error_of, job_doc, run_cli, s3_job, upload_tree

from prefops_trainer.core.errors import IntegrityError
from prefops_trainer.core.spec import parse_job
from prefops_trainer.inputs import load_inputs
from prefops_trainer.phases import precompute as precompute_phase

pytestmark = pytest.mark.integration

PAYLOAD = b"import os; os.system('echo a .pth file in site-packages runs in every rank')\n"


def escaped(tmp_path: Path) -> list[Path]:
    """Files the attack's object would have become, anywhere under the test's folder."""
    return sorted(tmp_path.rglob("escaped*.pth"))


def evil_keys(tmp_path: Path) -> dict[str, str]:
    """Relative keys that leave their folder: up and out (to ``tmp_path`` from ``cache/sources/<hash>/``), an
    absolute path (into ``tmp_path``), and an empty segment."""
    return {
        "dot-dot": "../../../escaped-up.pth",
        "leading-slash": f"{str(tmp_path).lstrip('/')}/escaped-abs.pth".join(["/", ""]),
        "empty-segment": "sub//escaped-empty.pth",
    }


@pytest.mark.parametrize("shape", ["dot-dot", "leading-slash", "empty-segment"])
def test_a_model_key_that_would_leave_its_folder_is_refused_by_name_and_nothing_is_copied(tmp_path, s3, shape):
    server, bucket = s3
    model = upload_tree(server, bucket, TINY / "model", "base/tiny")
    evil = evil_keys(tmp_path)[shape]
    server.client().put_object(Bucket=bucket, Key=f"base/tiny/{evil}", Body=PAYLOAD)
    cache = tmp_path / "cache"
    job = s3_job(tmp_path, bucket, model={"source": model})
    error = error_of(run_cli("precompute", job, env={**server.env, "PREFOPS_CACHE_DIR": str(cache)}))
    assert f"refusing the object 's3://{bucket}/base/tiny/{evil}'" in error
    assert "outside the folder" in error
    assert escaped(tmp_path) == [], "the object became a file"
    assert not [p for p in (cache / "sources").rglob("*") if p.is_file()], "nothing at all was copied"


@pytest.mark.parametrize("shape", ["file-and-folder", "long-segment"])
def test_keys_that_cannot_all_become_files_are_refused_by_name_with_exit_2_not_retried(tmp_path, s3, shape):
    server, bucket = s3
    model = upload_tree(server, bucket, TINY / "model", "base/tiny")
    keys = {"file-and-folder": ["extra/x", "extra/x/y"], "long-segment": ["extra/" + "é" * 128 + ".txt"]}[shape]
    for key in keys:
        server.client().put_object(Bucket=bucket, Key=f"base/tiny/{key}", Body=b"-")
    job = s3_job(tmp_path, bucket, model={"source": model})
    error = error_of(run_cli("precompute", job, env={**server.env, "PREFOPS_CACHE_DIR": str(tmp_path / "cache")}))
    why = {"file-and-folder": "names a file, and 'extra/x/y' makes it a folder too",
           "long-segment": "has a segment of 260 bytes; a file name may have 255"}[shape]  # fmt: skip
    assert (
        f"refusing the object 's3://{bucket}/base/tiny/{keys[0]}' under s3://{bucket}/base/tiny: its key {why}" in error
    )


def test_a_dataset_folder_and_a_reward_model_with_such_a_key_are_refused_too(tmp_path, s3, monkeypatch):
    from prefops_trainer.adapters.data import load_split
    from prefops_trainer.adapters.modelio import model_dir
    from prefops_trainer.core.spec import DatasetSpec, RewardModelSpec

    server, bucket = s3
    monkeypatch.setenv("PREFOPS_CACHE_DIR", str(tmp_path / "cache"))
    client = server.client()
    client.upload_file(str(TINY / "prefs.jsonl"), bucket, "data/prefs/train.jsonl")
    client.put_object(Bucket=bucket, Key="data/prefs/../../../escaped-data.pth", Body=PAYLOAD)
    with pytest.raises(IntegrityError, match=rf"refusing the object 's3://{bucket}/data/prefs/\.\./\.\./\.\./escaped"):
        load_split(DatasetSpec(source=f"s3://{bucket}/data/prefs"))
    reward = upload_tree(server, bucket, TINY / "reward-model", "judges/rm")
    client.put_object(Bucket=bucket, Key="judges/rm/../../../escaped-reward.pth", Body=PAYLOAD)
    with pytest.raises(IntegrityError, match=rf"refusing the object 's3://{bucket}/judges/rm/\.\./"):
        model_dir(RewardModelSpec(source=reward), field="spec.rewardModel.source")
    assert escaped(tmp_path) == []


def test_such_a_key_under_trained_or_a_checkpoint_is_refused_and_nothing_is_published_or_resumed(tmp_path, s3):
    server, bucket = s3
    job = s3_job(tmp_path, bucket, training={"maxSteps": 1, "checkpointEverySteps": 1})
    env = {**server.env, "PREFOPS_CACHE_DIR": str(tmp_path / "cache")}
    assert run_cli("precompute", job, env=env).returncode == 0
    assert run_cli("train", job, env=env).returncode == 0
    run = next(k for k in server.keys(bucket, "work/jobs/") if k.endswith("/trained/prefops-trained.json"))
    run = run.removesuffix("/trained/prefops-trained.json")
    up = "../" * 8
    server.client().put_object(Bucket=bucket, Key=f"{run}/trained/{up}escaped-trained.pth", Body=PAYLOAD)
    error = error_of(run_cli("export", job, env=env))
    assert f"refusing the object 's3://{bucket}/{run}/trained/{up}escaped-trained.pth'" in error
    assert server.keys(bucket, "models/") == [], "nothing was published"

    server.client().put_object(Bucket=bucket, Key=f"{run}/checkpoints/checkpoint-1/{up}escaped-ckpt.pth", Body=PAYLOAD)
    error = error_of(run_cli("train", job, env={**env, "PREFOPS_CACHE_DIR": str(tmp_path / "other-node")}))
    assert f"refusing the object 's3://{bucket}/{run}/checkpoints/checkpoint-1/{up}escaped-ckpt.pth'" in error
    assert escaped(tmp_path) == []


def test_an_object_replaced_by_one_of_the_same_size_is_fetched_again_and_the_cache_key_follows(
    tmp_path, s3, monkeypatch
):
    import torch
    from safetensors.torch import load_file, save_file

    server, bucket = s3
    monkeypatch.setenv("PREFOPS_CACHE_DIR", str(tmp_path / "cache"))
    model = upload_tree(server, bucket, TINY / "model", "base/tiny")
    server.client().upload_file(str(TINY / "prefs.jsonl"), bucket, "data/prefs.jsonl")
    doc = job_doc(tmp_path, model={"source": model}, dataset={"source": f"s3://{bucket}/data/prefs.jsonl"})

    def key_and_copies():
        inputs = load_inputs(parse_job(doc))
        data_copy = next((tmp_path / "cache" / "sources").rglob("prefs.jsonl"))
        return inputs.ref_cache("train").key, inputs.model_path, data_copy

    first, model_copy, _ = key_and_copies()
    weights = load_file(TINY / "model" / "model.safetensors")
    weights["lm_head.weight"][0, 0] += torch.tensor(1.0)
    changed = tmp_path / "model.safetensors"
    save_file(weights, changed, metadata={"format": "pt"})
    assert changed.stat().st_size == (TINY / "model" / "model.safetensors").stat().st_size
    server.client().upload_file(str(changed), bucket, "base/tiny/model.safetensors")
    second, _, _ = key_and_copies()
    assert (model_copy / "model.safetensors").read_bytes() == changed.read_bytes(), "the new weights were fetched"
    assert second != first, "the cache key is computed from the fresh copy"

    rows = (TINY / "prefs.jsonl").read_text()
    edited = rows.replace(" two .", " too .", 1)
    assert len(edited) == len(rows) and edited != rows
    server.client().put_object(Bucket=bucket, Key="data/prefs.jsonl", Body=edited.encode())
    third, _, data_copy = key_and_copies()
    assert data_copy.read_text() == edited and third not in (first, second)

    tampered = bytearray((model_copy / "model.safetensors").read_bytes())
    tampered[-1] ^= 0xFF
    (model_copy / "model.safetensors").write_bytes(bytes(tampered))
    assert key_and_copies()[0] == third, "a local copy edited in place is not taken for current"
    assert (model_copy / "model.safetensors").read_bytes() == changed.read_bytes()


def test_keys_are_checked_segment_by_segment():
    from prefops_trainer.core.integrity import key_problem, listing_problem

    assert [key_problem(k) for k in ("model.safetensors", "global_step4/mp_rank_00_model_states.pt", "a..b/c")] == [
        None,
        None,
        None,
    ]
    assert key_problem("../x") == "has a '..' segment"
    assert key_problem("a/./x") == "has a '.' segment"
    assert key_problem("/etc/x") == "begins with '/'"
    assert key_problem("a//x") == key_problem("a/") == "has an empty segment ('//' or a trailing '/')"
    assert key_problem("a\\..\\x") == "holds a backslash or a NUL byte"
    assert listing_problem(["b/c", "a/x", "a/x/y/z"]) == ("a/x", "names a file, and 'a/x/y/z' makes it a folder too; "
                                                           "both cannot exist on disk")  # fmt: skip
    assert listing_problem(["a/" + "x" * 255, "ab/x", "a/x/y"]) is None
    assert listing_problem(["a/" + "x" * 256]) == (
        "a/" + "x" * 256,
        "has a segment of 256 bytes; a file name may have 255",
    )


def manifest_of(server, bucket: str, prefix: str) -> dict:
    return json.loads(server.get(bucket, f"{prefix}/manifest.json"))


class Unpickled:
    """What an attacker's pickle does when it is loaded: here, leave a mark."""

    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self):
        return Path.write_text, (self.mark, "a checkpoint file from storage was unpickled")


@pytest.mark.distributed
def test_a_deepspeed_checkpoint_file_replaced_on_s3_is_refused_and_never_unpickled_even_with_its_marker_forged(
    tmp_path, s3
):
    import pickle

    server, bucket = s3
    job = s3_job(tmp_path, bucket, resources={"gpusPerNode": 0, "processesPerNode": 2},
                 training={"maxSteps": 2, "checkpointEverySteps": 2, "perDeviceBatchSize": 4,
                           "deepspeed": {"stage": 2}})  # fmt: skip
    env = {**server.env, "PREFOPS_CACHE_DIR": str(tmp_path / "node-a")}
    assert run_cli("precompute", job, env=env).returncode == 0
    result = run_cli("train", job, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    marker_key = next(k for k in server.keys(bucket, "work/jobs/") if k.endswith("checkpoint-2/prefops-complete.json"))
    prefix = marker_key.rsplit("/", 1)[0]
    marker = json.loads(server.get(bucket, marker_key))
    stored = {k[len(prefix) + 1 :] for k in server.keys(bucket, prefix + "/")} - {"prefops-complete.json"}
    assert set(marker["files"]) == stored, "every file of every rank is recorded"
    assert any("zero_pp_rank_1" in f for f in stored), "rank 1's partition among them"
    for rel, digest in marker["files"].items():
        assert hashlib.sha256(server.get(bucket, f"{prefix}/{rel}")).hexdigest() == digest, rel

    result = run_cli("train", job, env={**server.env, "PREFOPS_CACHE_DIR": str(tmp_path / "node-b")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from checkpoint-2" in result.stderr, "untouched, it is fetched, checked and resumed from"

    newest = max((k for k in server.keys(bucket, "work/jobs/") if k.endswith("/prefops-complete.json")),
                 key=lambda k: int(k.split("checkpoint-")[1].split("/")[0]))  # fmt: skip
    prefix = newest.rsplit("/", 1)[0]
    states = next(k[len(prefix) + 1 :] for k in server.keys(bucket, prefix + "/") if k.endswith("model_states.pt"))
    mark = tmp_path / "unpickled"
    server.client().put_object(Bucket=bucket, Key=f"{prefix}/{states}", Body=pickle.dumps(Unpickled(mark)))
    result = run_cli("train", job, env={**server.env, "PREFOPS_CACHE_DIR": str(tmp_path / "node-c")})
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert f"s3://{bucket}/{prefix} does not match its completion marker ({states}: sha256" in last, last
    assert not mark.exists(), "the replaced file was unpickled"

    forged = json.loads(server.get(bucket, f"{prefix}/prefops-complete.json"))  # whoever can write the prefix can
    forged["files"][states] = hashlib.sha256(server.get(bucket, f"{prefix}/{states}")).hexdigest()  # forge both
    server.client().put_object(Bucket=bucket, Key=f"{prefix}/prefops-complete.json", Body=json.dumps(forged).encode())
    result = run_cli("train", job, env={**server.env, "PREFOPS_CACHE_DIR": str(tmp_path / "node-d")})
    assert not mark.exists(), "a file whose marker was forged to match was unpickled"
    assert result.returncode == 2, result.stderr[-3000:]
    error = result.stderr.strip().splitlines()[-1]
    assert f"s3://{bucket}/{prefix}/{states}: not loaded: a checkpoint file may hold tensors and the few types" in error
    assert "(the weights-only unpickler refused it: Unsupported operand 149)" in error, "it says why"


def rewritten_shard(server, bucket: str, key: str, shift: float) -> bytes:
    """The Parquet shard at ``key`` with every chosen log-prob moved by ``shift``: well-formed, other numbers."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(server.get(bucket, key)))
    chosen = pa.array([v + shift for v in table.column("ref_chosen_logps").to_pylist()], pa.float32())
    out = io.BytesIO()
    pq.write_table(table.set_column(1, "ref_chosen_logps", chosen), out)
    return out.getvalue()


def test_a_tampered_cache_shard_is_refused_naming_it_and_nothing_trains(tmp_path, s3):
    server, bucket = s3
    job = s3_job(tmp_path, bucket, reference={"workers": 2, "verifySamples": 0})  # the checksums cover every row
    env = {**server.env, "PREFOPS_CACHE_DIR": str(tmp_path / "cache")}
    for shard in ("0", "1"):
        assert run_cli("precompute", job, "--shard", shard, env=env).returncode == 0
    cache = next(k for k in server.keys(bucket, "work/refcache/") if k.endswith("manifest.json")).rsplit("/", 1)[0]
    shards = manifest_of(server, bucket, cache)["shards"]
    assert [s["name"] for s in shards] == ["shard-00000-of-00002.parquet", "shard-00001-of-00002.parquet"]
    assert [s["rows"] for s in shards] == [32, 32]
    for s in shards:
        assert hashlib.sha256(server.get(bucket, f"{cache}/{s['name']}")).hexdigest() == s["sha256"]

    key = f"{cache}/shard-00001-of-00002.parquet"
    server.client().put_object(Bucket=bucket, Key=key, Body=rewritten_shard(server, bucket, key, -5.0))
    error = error_of(run_cli("train", job, env=env))
    assert f"reference cache s3://{bucket}/{cache}: shard-00001-of-00002.parquet has sha256 " in error
    assert "it was altered after the cache was written, and is not used" in error
    assert not [k for k in server.keys(bucket, "work/jobs/") if "/checkpoints/" in k or "/trained/" in k]


def test_shard_names_are_taken_from_the_manifest_only_inside_the_cache_folder(tmp_path, s3, monkeypatch):
    server, bucket = s3
    monkeypatch.setenv("PREFOPS_CACHE_DIR", str(tmp_path / "cache"))
    store = {"storage": {"uri": f"s3://{bucket}/work"}}
    ours = load_inputs(parse_job(job_doc(tmp_path, "a", **store)))
    theirs = load_inputs(parse_job(job_doc(tmp_path, "b", dataset={"maxLength": 48}, **store)))
    for inputs in (ours, theirs):
        precompute_phase.run(inputs)
    cache, other = ours.ref_cache("train"), theirs.ref_cache("train")
    doc = manifest_of(server, bucket, cache.root.path.split("/", 1)[1])
    doc["shards"][0]["name"] = f"../{other.key}/shard-00000-of-00001.parquet"
    doc["shards"][0]["sha256"] = hashlib.sha256(
        server.get(bucket, f"work/refcache/{other.key}/shard-00000-of-00001.parquet")
    ).hexdigest()
    server.client().put_object(
        Bucket=bucket, Key=f"work/refcache/{cache.key}/manifest.json", Body=json.dumps(doc).encode()
    )
    with pytest.raises(IntegrityError, match=rf"manifest\.json: shards\[0\]: names the file '\.\./{other.key}/shard"):
        cache.load()
