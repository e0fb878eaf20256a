"""Export publishes the trained weights only as the train phase wrote them (issue 18, item 3), against the real S3
server: the marker ``trained/prefops-trained.json`` records every file's sha256 and the train report's, and the gate
reads the final evaluation from that checked marker. Each tampering below is refused with exit 2 naming the file, and
nothing reaches ``output.uri``."""

from __future__ import annotations

import json

import pytest
import yaml
from support.trainer_jobs import TINY, error_of, run_cli, s3_job

pytestmark = pytest.mark.integration

UID = "trained-verified-uid"  # one run for every job file below, as on a cluster
EVALUATED = {"dataset": {"source": str(TINY / "prefs-split"), "evalSplit": "test"}, "training": {"maxSteps": 2}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, s3_server):
    """A job trained on S3 (run ``UID``, attempt 0): (server, bucket, tmp dir, env, its trained/ prefix)."""
    tmp = tmp_path_factory.mktemp("trained")
    bucket = s3_server.create_bucket("trained-verified")
    env = {**s3_server.env, "PREFOPS_CACHE_DIR": str(tmp / "cache")}
    job = job_file(tmp, bucket)
    assert run_cli("precompute", job, env=env).returncode == 0
    assert run_cli("train", job, env=env).returncode == 0
    prefix = f"work/jobs/default/t/{UID}/attempts/0/trained"
    assert f"{prefix}/prefops-trained.json" in s3_server.keys(bucket, prefix)
    return s3_server, bucket, tmp, env, prefix


def job_file(tmp, bucket, **extra):
    path = s3_job(tmp, bucket, **EVALUATED, **extra)
    doc = yaml.safe_load(path.read_text())
    doc["metadata"]["uid"] = UID
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Swapped:
    """Objects of the bucket replaced for one test, put back after it."""

    def __init__(self, server, bucket):
        self.server, self.bucket, self.kept = server, bucket, {}

    def put(self, key, body: bytes):
        if key not in self.kept:
            keys = self.server.keys(self.bucket, key)
            self.kept[key] = self.server.get(self.bucket, key) if key in keys else None
        self.server.client().put_object(Bucket=self.bucket, Key=key, Body=body)

    def restore(self):
        for key, body in self.kept.items():
            if body is None:
                self.server.client().delete_object(Bucket=self.bucket, Key=key)
            else:
                self.server.client().put_object(Bucket=self.bucket, Key=key, Body=body)


@pytest.fixture
def swap(trained):
    server, bucket, *_ = trained
    swapped = Swapped(server, bucket)
    yield swapped
    swapped.restore()


def refused(trained, job=None) -> str:
    server, bucket, tmp, env, _ = trained
    error = error_of(run_cli("export", job or job_file(tmp, bucket), env=env))
    assert server.keys(bucket, "models/") == [], "nothing was published"
    return error


def test_swapped_weights_are_refused_naming_the_file(trained, swap):
    server, bucket, _, _, prefix = trained
    weights = bytearray(server.get(bucket, f"{prefix}/adapter_model.safetensors"))
    weights[-1] ^= 0x01  # other weights, same size
    swap.put(f"{prefix}/adapter_model.safetensors", bytes(weights))
    error = refused(trained)
    assert f"s3://{bucket}/{prefix} does not match its marker prefops-trained.json (" in error
    assert "adapter_model.safetensors: sha256 " in error and "it was altered after the train phase wrote it" in error


def test_an_added_modeling_file_and_auto_map_are_refused_naming_both(trained, swap):
    server, bucket, _, _, prefix = trained
    config = json.loads(server.get(bucket, f"{prefix}/adapter_config.json"))
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
    swap.put(f"{prefix}/adapter_config.json", json.dumps(config).encode())
    swap.put(f"{prefix}/modeling_x.py", b"import os\nos.system('echo remote code ran')\n")
    error = refused(trained)
    assert "adapter_config.json: sha256 " in error and "modeling_x.py: not in the record" in error


def test_a_forged_evaluation_in_the_marker_is_refused_before_the_gate_reads_it(trained, swap):
    server, bucket, tmp, _, prefix = trained
    marker = json.loads(server.get(bucket, f"{prefix}/prefops-trained.json"))
    assert marker["evaluation"]["metrics"]["loss"] > 0
    marker["evaluation"]["metrics"]["loss"] = 0.0  # what the gate below asks for
    swap.put(f"{prefix}/prefops-trained.json", json.dumps(marker).encode())
    gated = job_file(tmp, bucket, output={"uri": f"s3://{bucket}/models/t", "gate": {"metric": "loss", "max": 0.0}})
    error = refused(trained, gated)
    marker_uri, report_uri = (
        f"s3://{bucket}/{prefix}/prefops-trained.json",
        f"s3://{bucket}/{prefix.removesuffix('/trained')}/phases/train.json",
    )
    assert f"{marker_uri}: does not match the train report it records ({report_uri}) in evaluation" in error


def test_an_edited_train_report_is_refused_naming_it(trained, swap):
    server, bucket, _, _, prefix = trained
    key = prefix.removesuffix("/trained") + "/phases/train.json"
    report = json.loads(server.get(bucket, key))
    report["metrics"]["loss"] = 0.0
    swap.put(key, json.dumps(report).encode())
    error = refused(trained)
    assert f"s3://{bucket}/{key}: sha256 " in error and "it was altered after it was written" in error


def test_untouched_weights_are_published_with_their_checksums(trained):
    import hashlib

    server, bucket, tmp, env, prefix = trained
    result = run_cli("export", job_file(tmp, bucket, output={"uri": f"s3://{bucket}/published/t"}), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads(server.get(bucket, "published/t/prefops.json"))
    assert manifest["evaluation"] == json.loads(server.get(bucket, f"{prefix}/prefops-trained.json"))["evaluation"]
    for f in manifest["files"]:
        assert hashlib.sha256(server.get(bucket, f"published/t/{f['path']}")).hexdigest() == f["sha256"]
