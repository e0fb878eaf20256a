"""The whole loop on one machine, with real parts: kube-apiserver + etcd + controller-manager, the operator as
its ServiceAccount, an S3 server, Prometheus, and the trainer really running each pod's command through the
kubelet stand-in (``support.podrunner``, the only stand-in).

1. ``kubectl apply -f examples/tiny-dpo-s3.yaml`` walks Precomputing (2 shards) → Training (2 ranks, DeepSpeed
   ZeRO-2 on CPU) → Exporting → Succeeded; ``kubectl get ptj`` shows progress, loss and accuracy meanwhile; the
   merged model and ``prefops.json`` land in S3; Prometheus has the trainer's and the operator's series.
2. The same job with another beta hits the reference cache.
3. A job whose rank is killed mid-training restarts its group, resumes from a checkpoint and still succeeds.

The tests run in order and share one control plane, operator, S3 bucket and Prometheus.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from support.kube import ROOT, wait_for
from support.operator import OperatorProcess
from support.podrunner import PodRunner, image_env
from support.prometheus import Prometheus

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

BUCKET = "prefops-demo"
EXAMPLE = ROOT / "examples" / "tiny-dpo-s3.yaml"
JOB_TIMEOUT = 600


class Loop:
    def __init__(self, cluster, namespace: str, s3, runner: PodRunner, operator: OperatorProcess, prom, tmp: Path):
        self.cluster, self.namespace, self.s3, self.runner = cluster, namespace, s3, runner
        self.operator, self.prom, self.tmp = operator, prom, tmp

    def kubectl(self, *args: str) -> str:
        cmd = ["kubectl", f"--kubeconfig={self.cluster.admin_kubeconfig}", "-n", self.namespace, *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout

    def apply(self, name: str, **spec_changes) -> None:
        if not spec_changes and name == "tiny-dpo":
            self.kubectl("apply", "-f", str(EXAMPLE))
            return
        doc = yaml.safe_load(EXAMPLE.read_text())
        doc["metadata"]["name"] = name
        doc["spec"]["output"]["uri"] = f"s3://{BUCKET}/models/{name}"
        for path, value in spec_changes.items():
            node = doc["spec"]
            *parents, leaf = path.split(".")
            for key in parents:
                node = node[key]
            node[leaf] = value
        manifest = self.tmp / f"{name}.yaml"
        manifest.write_text(yaml.safe_dump(doc))
        self.kubectl("apply", "-f", str(manifest))

    def job(self, name: str) -> dict:
        return self.cluster.custom().get_namespaced_custom_object(
            "prefops.dev", "v1alpha1", self.namespace, "preferencetrainingjobs", name
        )

    def follow(self, name: str, while_training=None) -> list[str]:
        """Poll the job until it finishes; return the phases seen, in order."""
        seen: list[str] = []
        deadline = time.monotonic() + JOB_TIMEOUT
        while time.monotonic() < deadline:
            status = self.job(name).get("status", {})
            phase = status.get("phase")
            if phase and (not seen or seen[-1] != phase):
                seen.append(phase)
            if phase == "Training" and while_training is not None:
                while_training(status)
            if phase in ("Succeeded", "Failed"):
                return seen
            time.sleep(0.5)
        raise AssertionError(f"{name} did not finish in {JOB_TIMEOUT}s; phases {seen}; {self.diagnose(name)}")

    def diagnose(self, name: str) -> str:
        logs = "\n".join(f"--- {p}\n{self.runner.log_of(p)[-1500:]}" for p in self.runner.started if p.startswith(name))
        return f"status={self.job(name).get('status')}\n{logs}\n--- operator\n{self.operator.tail()}"

    def manifest(self, name: str) -> dict:
        return json.loads(self.s3.get(BUCKET, f"models/{name}/prefops.json"))


@pytest.fixture(scope="module")
def loop(kube_cluster, operator_kubeconfig, s3_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    namespace = kube_cluster.create_namespace("e2e")
    client = s3_server.client()
    if BUCKET not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket=BUCKET)
    for path in sorted(p for p in (ROOT / "examples" / "tiny").rglob("*") if p.is_file()):
        client.upload_file(str(path), BUCKET, f"tiny/{path.relative_to(ROOT / 'examples' / 'tiny').as_posix()}")
    kube_cluster.core().create_namespaced_secret(
        namespace, {"metadata": {"name": "s3-creds"}, "stringData": s3_server.env}
    )
    targets = tmp / "trainer-pods.json"
    targets.write_text("[]")
    images = {"": image_env(ROOT / "images" / "trainer" / "Dockerfile")}
    with PodRunner(kube_cluster.core(), namespace, tmp / "pods", images=images, file_sd=targets) as runner:
        operator = OperatorProcess(operator_kubeconfig, tmp / "operator.log", namespaces=(namespace,),
                                   extra_args=("--progress-interval", "1")).start()  # fmt: skip
        prom = Prometheus.start(tmp / "prom", {"prefops-operator": [f"127.0.0.1:{operator.metrics_port}"]},
                                file_sd={"prefops-trainer-pods": targets})  # fmt: skip
        try:
            yield Loop(kube_cluster, namespace, s3_server, runner, operator, prom, tmp)
        finally:
            prom.stop()
            operator.stop()


def test_a_job_applied_with_kubectl_walks_every_phase_to_a_model_in_s3(loop):
    rows: list[str] = []

    def watch_kubectl(status):
        rows.append(loop.kubectl("get", "ptj", "tiny-dpo", "--no-headers"))

    loop.apply("tiny-dpo")
    phases = loop.follow("tiny-dpo", while_training=watch_kubectl)
    assert phases[-1] == "Succeeded", loop.diagnose("tiny-dpo")
    assert [p for p in phases if p != "Pending"] == ["Precomputing", "Training", "Exporting", "Succeeded"]

    started = loop.runner.started
    assert sorted(p for p in started if p.startswith("tiny-dpo-")) == [
        "tiny-dpo-export-0", "tiny-dpo-precompute-0", "tiny-dpo-precompute-1", "tiny-dpo-train-0", "tiny-dpo-train-1",
    ]  # fmt: skip
    train_log = loop.runner.log_of("tiny-dpo-train-1")
    assert "[rank 1]" in train_log and "starting 1 processes on this node (2 nodes, node rank 1)" in train_log

    progress = [r for r in rows if re.search(r"\s\d+/\d+\s+\d+\.\d+\s+\d(\.\d+)?\s", r)]
    assert progress, f"kubectl get ptj showed progress, loss and reward accuracy while training: {rows[-10:]}"

    status = loop.job("tiny-dpo")["status"]
    assert status["outputURI"] == f"s3://{BUCKET}/models/tiny-dpo"
    assert status["phases"]["precompute"]["cacheHit"] is False
    manifest = loop.manifest("tiny-dpo")
    for f in manifest["files"]:
        data = loop.s3.get(BUCKET, f"models/tiny-dpo/{f['path']}")
        assert hashlib.sha256(data).hexdigest() == f["sha256"], f["path"]
    assert {"model.safetensors", "tokenizer.json", "README.md", "training-curves.png"} <= {
        f["path"] for f in manifest["files"]
    }
    assert manifest["phases"]["train"]["worldSize"] == 2 and manifest["phases"]["precompute"]["shards"] == 2

    from transformers import AutoModelForCausalLM

    local = loop.tmp / "downloaded"
    for f in manifest["files"]:
        (local / f["path"]).parent.mkdir(parents=True, exist_ok=True)
        (local / f["path"]).write_bytes(loop.s3.get(BUCKET, f"models/tiny-dpo/{f['path']}"))
    assert AutoModelForCausalLM.from_pretrained(local).num_parameters() > 0

    sel = '{job_name="tiny-dpo"}'
    steps = loop.prom.values(f"max_over_time(prefops_trainer_step{sel}[15m])")
    assert steps and steps[0] > 0, "Prometheus scraped the training pods' step"
    ranks = loop.prom.query(f"last_over_time(prefops_trainer_tokens_per_second{sel}[15m])")
    assert {r["metric"]["rank"] for r in ranks} == {"0", "1"}, "both training pods were discovered and scraped"
    assert {r["metric"]["pod"] for r in ranks} == {"tiny-dpo-train-0", "tiny-dpo-train-1"}
    assert loop.prom.query("prefops_operator_phase_transitions_total"), "and the operator's series"
    assert loop.prom.query('prefops_operator_jobs{phase="Succeeded"} >= 1')


def test_a_second_job_with_another_beta_hits_the_reference_cache(loop):
    loop.apply("tiny-dpo-beta", **{"algorithm.beta": 0.3})
    phases = loop.follow("tiny-dpo-beta")
    assert phases[-1] == "Succeeded", loop.diagnose("tiny-dpo-beta")
    assert loop.job("tiny-dpo-beta")["status"]["phases"]["precompute"]["cacheHit"] is True
    manifest = loop.manifest("tiny-dpo-beta")
    assert manifest["phases"]["precompute"]["cacheHit"] is True
    assert manifest["phases"]["precompute"]["keys"] == loop.manifest("tiny-dpo")["phases"]["precompute"]["keys"]


def test_a_rank_killed_mid_training_restarts_the_group_which_resumes_and_succeeds(loop):
    name = "tiny-dpo-kill"
    loop.apply(name, **{"training.checkpointEverySteps": 4})

    def first_checkpoint() -> bool:
        keys = loop.s3.keys(BUCKET, "work/jobs/")
        return any(name in k and k.endswith("prefops-complete.json") for k in keys)

    wait_for(first_checkpoint, JOB_TIMEOUT, f"{name}'s first checkpoint")
    victim = f"{name}-train-1"
    assert victim in loop.runner.pods, "rank 1 is running when it is killed"
    loop.runner.kill(victim)
    phases = loop.follow(name)
    assert phases[-1] == "Succeeded", loop.diagnose(name)
    status = loop.job(name)["status"]
    assert status["restarts"] == 1
    assert loop.runner.started.count(victim) == 2 and loop.runner.started.count(f"{name}-train-0") == 2
    train = loop.manifest(name)["phases"]["train"]
    assert train["resumedFrom"].startswith("checkpoint-"), "the new group resumed instead of starting over"
    events = loop.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json")
    reasons = [e["reason"] for e in json.loads(events)["items"]]
    assert any("Restart" in r or "Fail" in r for r in reasons), reasons
