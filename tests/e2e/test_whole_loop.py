"""The whole loop the way users run it: a real two-node Kubernetes 1.20 (``make cluster NODES=2``: kubelets,
containerds, scheduler, kube-proxy and cluster DNS, built from Debian's source) running the project's own images.

- The operator is installed from ``charts/prefops`` (rendered with the Helm SDK) and runs as its Deployment from
  ``prefops/operator:dev`` under the chart's RBAC; trainer pods run ``prefops/trainer:dev``.
- An S3 server (moto) and Prometheus run on the node's bridge address; Prometheus finds the trainer pods and the
  operator's metrics Service as the chart's PodMonitor and ServiceMonitor describe (``kubernetes_sd``).

1. ``kubectl apply -f examples/tiny-dpo-s3.yaml`` walks Precomputing (2 shards) → Training (2 ranks meeting through
   the headless Service's DNS, DeepSpeed ZeRO-2 on CPU) → Exporting → Succeeded; ``kubectl get ptj`` shows
   progress, loss and accuracy meanwhile and ``kubectl logs`` the steps; inside a trainer pod the user is 1000 and
   ``/`` is read-only; the merged model lands in S3; Prometheus has the trainer's and the operator's series.
2. The same job with another beta hits the reference cache; one whose ranks cannot share a node runs one rank on
   each node and succeeds.
3. A rank deleted mid-training (``kubectl delete pod``) restarts its group, which resumes from its checkpoint.
4. The operator's pod killed mid-job: the Deployment replaces it, and the job still finishes without a pod
   created twice.
5. A job whose image does not exist fails at its startup deadline, naming the image (measured with the apiserver's
   timestamps).
6. A 2-point beta sweep with an eval split: the second trial hits the first's reference cache, and the sweep names
   the trial with the best held-out reward accuracy.
7. Admission (the memory plan from a ConfigMap holding the model's config.json): the job of 2. has its pods sized by
   the plan of their own phase; a job that cannot fit its GPUs ends WontFit with no pod ever created, and
   ``kubectl describe ptj`` shows its plan.

The tests run in order and share one cluster, operator, namespace, S3 bucket and Prometheus. The process-based
kubelet stand-in of earlier versions is gone; ``support.kubelet`` still sets pod status by hand for the operator's
integration tests on a bare apiserver (tests/operator), where each test needs an exact pod state at once.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import re
import secrets
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from support.chart_rendering import render
from support.kube import ROOT, wait_for
from support.kubesd import KubernetesDiscovery
from support.node import NODE_IP, Cluster, PodWatch, pod_logs, pod_summary
from support.prometheus import Prometheus, monitor_scrape_configs
from support.s3 import S3Server

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

BUCKET = "prefops-demo"
EXAMPLE = ROOT / "examples" / "tiny-dpo-s3.yaml"
JOB_TIMEOUT = 600
OPERATOR_NAMESPACE = "prefops-system"
OPERATOR_IMAGE, TRAINER_IMAGE = "prefops/operator:dev", "prefops/trainer:dev"
CHART_VALUES = {
    "image": {"repository": "prefops/operator", "tag": "dev", "pullPolicy": "Never"},
    "trainer": {"image": {"repository": "prefops/trainer", "tag": "dev", "pullPolicy": "Never"}},
    "operator": {"progressInterval": 1},
    "podMonitor": {"enabled": True, "interval": "1s", "scrapeTimeout": "900ms"},
    "serviceMonitor": {"enabled": True, "interval": "1s", "scrapeTimeout": "900ms"},
}
MONITOR_KINDS = ("PodMonitor", "ServiceMonitor")


class Loop:
    def __init__(self, node: Cluster, namespace: str, s3: S3Server, pods: PodWatch, prom: Prometheus, tmp: Path):
        self.node, self.namespace, self.s3, self.pods, self.prom, self.tmp = node, namespace, s3, pods, prom, tmp

    def kubectl(self, *args: str) -> str:
        return self.node.kubectl(*args, namespace=self.namespace)

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
                node = node.setdefault(key, {})
            node[leaf] = value
        manifest = self.tmp / f"{name}.yaml"
        manifest.write_text(yaml.safe_dump(doc))
        self.kubectl("apply", "-f", str(manifest))

    def job(self, name: str) -> dict:
        return self.node.custom().get_namespaced_custom_object(
            "prefops.dev", "v1alpha1", self.namespace, "preferencetrainingjobs", name
        )

    def follow(self, name: str, while_running=None) -> list[str]:
        """Poll the job until it finishes; return the phases seen, in order."""
        seen: list[str] = []
        deadline = time.monotonic() + JOB_TIMEOUT
        while time.monotonic() < deadline:
            status = self.job(name).get("status", {})
            phase = status.get("phase")
            if phase and (not seen or seen[-1] != phase):
                seen.append(phase)
            if phase in ("Succeeded", "Failed"):
                return seen
            if while_running is not None:
                while_running(status)
            time.sleep(0.5)
        raise AssertionError(f"{name} did not finish in {JOB_TIMEOUT}s; phases {seen}; {self.diagnose(name)}")

    def diagnose(self, name: str) -> str:
        logs = "\n".join(
            f"--- {p}\n{pod_logs(self.node, self.namespace, p)[-1500:]}" for p in sorted(set(self.pods.names(name)))
        )
        operator = self.node.kubectl("logs", "deployment/prefops", "--tail=60", namespace=OPERATOR_NAMESPACE)
        pods = pod_summary(self.node, self.namespace)
        return f"status={self.job(name).get('status')}\n{pods}\n{logs}\n--- operator\n{operator}"

    def manifest(self, name: str) -> dict:
        return json.loads(self.s3.get(BUCKET, f"models/{name}/prefops.json"))

    def pod_phase(self, name: str) -> str | None:
        try:
            return self.node.core().read_namespaced_pod(name, self.namespace).status.phase
        except Exception:
            return None


def install_chart(node: Cluster) -> list[dict]:
    """Apply charts/prefops as `helm install` would (the CRD first); return the monitors it rendered."""
    rendered = render(CHART_VALUES)
    monitors = [o for o in rendered.objects if o["kind"] in MONITOR_KINDS]
    node.kubectl("create", "namespace", OPERATOR_NAMESPACE)
    crds = [o for o in rendered.objects if o["kind"] == "CustomResourceDefinition"]
    node.apply(crds)
    for crd in crds:
        node.kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}", "--timeout=60s")
    node.apply([o for o in rendered.objects if o["kind"] not in ("CustomResourceDefinition", *MONITOR_KINDS)])
    node.kubectl("rollout", "status", "deployment/prefops", "--timeout=180s", namespace=OPERATOR_NAMESPACE)
    return monitors


def uninstall_chart(node: Cluster) -> None:
    """Delete what install_chart made, waiting for it to go (a node that stays up is used again)."""
    node.kubectl("delete", "namespace", OPERATOR_NAMESPACE, "--ignore-not-found", "--timeout=180s", timeout=200)
    for kind in ("ClusterRoleBinding", "ClusterRole", "CustomResourceDefinition"):
        node.kubectl("delete", kind, "-l", "app.kubernetes.io/instance=prefops", "--ignore-not-found", timeout=200)


def discovery(node: Cluster) -> KubernetesDiscovery:
    """Kubernetes discovery for Prometheus, reading the API as Prometheus' own ServiceAccount (read-only)."""
    node.apply(list(yaml.safe_load_all((Path(__file__).parent / "prometheus-rbac.yaml").read_text())))
    return KubernetesDiscovery(node.core_as(node.service_account_token(OPERATOR_NAMESPACE, "e2e-prometheus")))


@pytest.fixture(scope="module")
def loop(cluster, tmp_path_factory):
    node = cluster
    tmp = tmp_path_factory.mktemp("e2e")
    namespace = f"e2e-{secrets.token_hex(3)}"
    with contextlib.ExitStack() as stack:
        s3 = S3Server.start(tmp / "moto.log", host=NODE_IP)
        stack.callback(s3.stop)
        node.kubectl("create", "namespace", namespace)
        stack.callback(node.kubectl, "delete", "namespace", namespace, "--wait=false")
        stack.callback(uninstall_chart, node)
        monitors = install_chart(node)
        sd = stack.enter_context(discovery(node))
        prom = Prometheus.start(tmp / "prom", {}, scrape_configs=tuple(monitor_scrape_configs(monitors, sd.url)),
                                host=NODE_IP)  # fmt: skip
        stack.callback(prom.stop)
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
        tiny = ROOT / "examples" / "tiny"
        for path in sorted(p for p in tiny.rglob("*") if p.is_file()):
            client.upload_file(str(path), BUCKET, f"tiny/{path.relative_to(tiny).as_posix()}")
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds"}, "stringData": s3.env}
        node.apply([secret], namespace=namespace)
        pods = stack.enter_context(PodWatch(node.core(), namespace))
        yield Loop(node, namespace, s3, pods, prom, tmp)


def timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def check_container_contract(loop: Loop, pod: str) -> dict[str, str]:
    """Inside a running trainer pod: the uid, and whether / and the volumes are writable."""
    script = "id -u; touch /probe 2>/dev/null && echo root-writable || echo root-read-only; touch /cache/probe /tmp/probe && echo volumes-writable"
    out = loop.kubectl("exec", pod, "--", "sh", "-c", script).split()
    return {"uid": out[0], "root": out[1], "volumes": out[2] if len(out) > 2 else "volumes-not-writable"}


def test_a_job_applied_with_kubectl_walks_every_phase_to_a_model_in_s3(loop):
    rows: list[str] = []
    inside: dict[str, str] = {}

    def while_running(status):
        if status.get("phase") != "Training":
            return
        rows.append(loop.kubectl("get", "ptj", "tiny-dpo", "--no-headers"))
        if not inside and loop.pod_phase("tiny-dpo-train-a1-0") == "Running":
            inside.update(check_container_contract(loop, "tiny-dpo-train-a1-0"))

    loop.apply("tiny-dpo")
    phases = loop.follow("tiny-dpo", while_running)
    assert phases[-1] == "Succeeded", loop.diagnose("tiny-dpo")
    assert [p for p in phases if p != "Pending"] == ["Precomputing", "Training", "Exporting", "Succeeded"]

    assert sorted(loop.pods.names("tiny-dpo-")) == [
        "tiny-dpo-export-a1-0", "tiny-dpo-precompute-a1-0", "tiny-dpo-precompute-a1-1", "tiny-dpo-train-a1-0",
        "tiny-dpo-train-a1-1",
    ]  # fmt: skip
    assert inside == {"uid": "1000", "root": "root-read-only", "volumes": "volumes-writable"}

    train_log = loop.kubectl("logs", "tiny-dpo-train-a1-1")
    assert "[rank 1]" in train_log and "starting 1 processes on this node (2 nodes, node rank 1)" in train_log
    rank0_log = loop.kubectl("logs", "tiny-dpo-train-a1-0")
    steps = [int(m) for m in re.findall(r"step (\d+)/\d+", rank0_log)]
    assert steps and steps == sorted(steps) and steps[-1] > steps[0], f"kubectl logs shows step progress: {steps}"
    for log in (train_log, rank0_log):  # the image's prebuilt op, not a compile at start
        assert "deepspeed_shm_comm_op built successfully" in log and "Time to load deepspeed_shm_comm" not in log

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
    steps_seen = loop.prom.values(f"max(max_over_time(prefops_trainer_step{sel}[15m]))")
    assert steps_seen and steps_seen[0] > 0, "Prometheus scraped the training pods' step"
    ranks = loop.prom.query(f"last_over_time(prefops_trainer_tokens_per_second{sel}[15m])")
    assert {r["metric"]["rank"] for r in ranks} == {"0", "1"}, "both training pods were discovered and scraped"
    assert {r["metric"]["pod"] for r in ranks} == {"tiny-dpo-train-a1-0", "tiny-dpo-train-a1-1"}
    assert {r["metric"]["job"] for r in ranks} == {f"{OPERATOR_NAMESPACE}/prefops-trainers"}, "by the PodMonitor"
    operator = loop.prom.wait_for('prefops_operator_jobs{phase="Succeeded"} >= 1', 30, "(the operator's gauge)")
    assert {r["metric"]["service"] for r in operator} == {"prefops-metrics"}, "through the ServiceMonitor"
    assert loop.prom.query("prefops_operator_phase_transitions_total")


def config_map(loop: Loop, name: str, config: Path) -> None:
    """A ConfigMap holding a model's config.json, for the operator's plan (spec.model.configMap)."""
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"config.json": config.read_text()},
    }
    loop.node.apply([doc], namespace=loop.namespace)


def test_a_second_job_with_another_beta_hits_the_reference_cache(loop):
    config_map(loop, "tiny-config", ROOT / "examples" / "tiny" / "model" / "config.json")
    loop.apply("tiny-dpo-beta", **{"algorithm.beta": 0.3, "model.configMap": "tiny-config"})
    phases = loop.follow("tiny-dpo-beta")
    assert phases[-1] == "Succeeded", loop.diagnose("tiny-dpo-beta")
    planned = loop.job("tiny-dpo-beta")["status"]["plan"]["phases"]
    for pod in (
        loop.node.core().list_namespaced_pod(loop.namespace, label_selector="prefops.dev/job-name=tiny-dpo-beta").items
    ):
        phase = pod.metadata.labels["prefops.dev/phase"]
        requests = pod.spec.containers[0].resources.requests
        assert (requests["memory"], requests["cpu"]) == (planned[phase]["memory"], planned[phase]["cpu"]), (
            pod.metadata.name
        )
        cache = next(v for v in pod.spec.volumes if v.name == "cache")
        assert cache.empty_dir.size_limit == planned[phase]["cache"], pod.metadata.name
    assert loop.job("tiny-dpo-beta")["status"]["phases"]["precompute"]["cacheHit"] is True
    manifest = loop.manifest("tiny-dpo-beta")
    assert manifest["phases"]["precompute"]["cacheHit"] is True
    assert manifest["phases"]["precompute"]["keys"] == loop.manifest("tiny-dpo")["phases"]["precompute"]["keys"]


def test_a_two_node_job_runs_one_rank_on_each_node_and_succeeds(loop):
    name = "tiny-dpo-two-nodes"
    assert len(loop.node.nodes) >= 2, f"the e2e cluster has two nodes: {loop.node.nodes}"
    # each pod asks for more than half of a node's 2 CPUs, as GPUs would on a real cluster: no two fit on one node
    loop.apply(name, **{"algorithm.beta": 0.15, "resources.requests": {"cpu": "1100m"}})
    placed: dict[str, str] = {}  # training pod → its node

    def while_running(status):
        selector = f"prefops.dev/job-name={name},prefops.dev/phase=train"
        for p in loop.node.core().list_namespaced_pod(loop.namespace, label_selector=selector).items:
            if p.spec.node_name:
                placed[p.metadata.name] = p.spec.node_name

    phases = loop.follow(name, while_running)
    assert phases[-1] == "Succeeded", loop.diagnose(name)
    assert loop.job(name)["status"]["restarts"] == 0
    assert len(placed) == 2 and len(set(placed.values())) == 2, f"one rank on each node: {placed}"
    assert set(placed.values()) <= set(loop.node.nodes)
    assert loop.manifest(name)["phases"]["train"]["worldSize"] == 2


def test_a_rank_deleted_mid_training_restarts_the_group_which_resumes_and_succeeds(loop):
    name = "tiny-dpo-kill"
    loop.apply(name, **{"training.checkpointEverySteps": 4})

    def first_checkpoint() -> bool:
        keys = loop.s3.keys(BUCKET, "work/jobs/")
        return any(name in k and k.endswith("prefops-complete.json") for k in keys)

    wait_for(first_checkpoint, JOB_TIMEOUT, f"{name}'s first checkpoint")
    victim = f"{name}-train-a1-1"
    assert loop.pod_phase(victim) == "Running", "rank 1 is running when it is deleted"
    loop.kubectl("delete", "pod", victim, "--wait=false")
    phases = loop.follow(name)
    assert phases[-1] == "Succeeded", loop.diagnose(name)
    status = loop.job(name)["status"]
    assert (status["restarts"], status["disruptions"], status["failures"]) == (1, 1, 0), "a disruption, not a failure"
    assert status["lastRestart"]["reason"] == "Deleted"
    created = collections.Counter(loop.pods.names(f"{name}-train-"))
    assert created == {f"{name}-train-a{a}-{i}": 1 for a in (1, 2) for i in (0, 1)}, "the whole group created again"
    train = loop.manifest(name)["phases"]["train"]
    assert train["resumedFrom"].startswith("checkpoint-"), "the new group resumed instead of starting over"
    events = loop.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json")
    reasons = [e["reason"] for e in json.loads(events)["items"]]
    assert "Disrupted" in reasons and "Recovered" in reasons, reasons


def test_the_operator_pod_killed_mid_job_is_replaced_and_the_job_finishes_without_duplicate_pods(loop):
    name = "tiny-dpo-operator-killed"
    selector = "app.kubernetes.io/name=prefops"

    def operator_pods() -> list[str]:
        out = loop.node.kubectl("get", "pods", "-l", selector, "-o", "name", namespace=OPERATOR_NAMESPACE)
        return out.split()

    (before,) = operator_pods()
    loop.apply(name, **{"algorithm.beta": 0.2})
    wait_for(lambda: loop.job(name).get("status", {}).get("phase") == "Training", JOB_TIMEOUT, f"{name} training")
    loop.node.kubectl("delete", before, "--grace-period=0", "--force", namespace=OPERATOR_NAMESPACE)
    phases = loop.follow(name)
    assert phases[-1] == "Succeeded", loop.diagnose(name)
    (after,) = wait_for(lambda: (p := operator_pods()) and before not in p and p, 60, "one new operator pod")
    assert after != before
    status = loop.job(name)["status"]
    assert status["restarts"] == 0, "the operator's restart did not restart the job's pods"
    created = collections.Counter(loop.pods.names(f"{name}-"))
    assert created and set(created.values()) == {1}, f"every pod was created once: {created}"
    phases_and_replicas = ["export-a1-0", "precompute-a1-0", "precompute-a1-1", "train-a1-0", "train-a1-1"]
    assert sorted(created) == [f"{name}-{p}" for p in phases_and_replicas]


def test_a_job_whose_image_does_not_exist_fails_at_its_startup_deadline_naming_the_image(loop):
    name, image, deadline = "tiny-dpo-no-image", "prefops/trainer:does-not-exist", 20
    loop.apply(name, **{"resources.image": image, "startupDeadlineSeconds": deadline, "backoffLimit": 0})
    phases = loop.follow(name)
    assert phases[-1] == "Failed", loop.diagnose(name)
    status = loop.job(name)["status"]
    assert status["lastFailure"]["reason"] == "StartupDeadlineExceeded"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert image in failed["message"] and image in status["lastFailure"]["message"], failed["message"]
    # the deadline counts from the pod's creationTimestamp (whole seconds): measure with the apiserver's clock
    created = timestamp(loop.pods.first(f"{name}-").created)
    elapsed = (timestamp(failed["lastTransitionTime"]) - created).total_seconds()
    assert deadline <= elapsed < deadline + 60, f"failed {elapsed:.0f}s after its first pod was created"


def test_a_two_point_beta_sweep_with_an_eval_split_finishes_and_names_its_best_trial(loop):
    name, trials = "tiny-sweep", ("tiny-sweep-0", "tiny-sweep-1")
    template = yaml.safe_load(EXAMPLE.read_text())["spec"]
    template["dataset"] = {"source": f"s3://{BUCKET}/tiny/prefs-split", "evalSplit": "test", "maxLength": 64}
    template["training"] = {"epochs": 1, "learningRate": 0.001, "perDeviceBatchSize": 8, "seed": 7}
    template["reference"] = {"batchSize": 32, "workers": 1}
    template["resources"] = {"nodes": 1, "gpusPerNode": 0, "processesPerNode": 1}
    template["output"] = {"uri": f"s3://{BUCKET}/models/{name}"}
    sweep = {
        "apiVersion": "prefops.dev/v1alpha1",
        "kind": "PreferenceTrainingSweep",
        "metadata": {"name": name},
        "spec": {
            "template": template,
            "parameters": [{"path": "algorithm.beta", "values": [0.1, 0.3]}],
            "objective": {"metric": "rewards/accuracies", "goal": "maximize"},
            "parallelism": 2,
        },
    }
    manifest = loop.tmp / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump(sweep))
    loop.kubectl("apply", "-f", str(manifest))

    def finished() -> dict | None:
        status = (
            loop.node.custom()
            .get_namespaced_custom_object("prefops.dev", "v1alpha1", loop.namespace, "preferencetrainingsweeps", name)
            .get("status", {})
        )
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait_for(finished, 2 * JOB_TIMEOUT, f"sweep {name} to finish", interval=1)
    assert status["phase"] == "Succeeded", f"{status}\n{loop.diagnose(trials[0])}\n{loop.diagnose(trials[1])}"
    rows = {t["name"]: t for t in status["trials"]}
    assert sorted(rows) == list(trials) and {r["phase"] for r in rows.values()} == {"Succeeded"}
    assert [rows[t]["cacheHit"] for t in trials] == [False, True], "the second trial waited for the first's cache"

    objectives = {}
    for trial in trials:
        job = loop.job(trial)
        assert job["metadata"]["labels"]["prefops.dev/sweep"] == name
        evaluation = job["status"]["evaluation"]
        assert evaluation["final"] is True
        published = json.loads(loop.s3.get(BUCKET, f"models/{name}/{trial}/prefops.json"))["evaluation"]
        assert published["split"] == "test" and published["step"] == evaluation["step"]
        value = published["metrics"]["rewards/accuracies"]
        assert rows[trial]["objective"] == pytest.approx(value, abs=1e-6) == evaluation["metrics"]["rewards/accuracies"]
        objectives[trial] = value
    best = max(trials, key=lambda t: (objectives[t], -trials.index(t)))  # ties go to the earlier trial
    assert status["best"]["trial"] == best and status["best"]["objective"] == pytest.approx(objectives[best])
    assert status["best"]["output"] == f"s3://{BUCKET}/models/{name}/{best}"
    columns = loop.kubectl("get", "ptsweep", name, "--no-headers").split()
    # NAME TRIALS RUNNING SUCCEEDED FAILED BEST ...
    assert columns[1:5] == ["2", "0", "2", "0"] and columns[5] == best, columns


def test_a_job_that_cannot_fit_ends_wont_fit_before_any_pod_and_describe_shows_its_plan(loop):
    """A 7B model's full fine-tuning on one 16Gi GPU: the operator plans it from the config.json in a ConfigMap and
    fails it before a pod exists; a node without GPUs never sees it."""
    config_map(loop, "qwen7b-config", ROOT / "tests" / "fixtures" / "model-configs" / "Qwen--Qwen2.5-7B-Instruct.json")
    name = "too-big"
    spec = {"model.configMap": "qwen7b-config", "resources.gpusPerNode": 1, "resources.gpuMemory": "16Gi",
            "resources.nodes": 1}  # fmt: skip
    loop.apply(name, **spec)
    phases = loop.follow(name)
    assert phases[-1] == "Failed"
    status = loop.job(name)["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "WontFit" and "To make it fit: " in failed["message"]
    assert loop.pods.names(name) == [], "no pod was ever created"
    described = loop.kubectl("describe", "ptj", name)
    assert "Plan:" in described and "Per Device:" in described and status["plan"]["perDevice"] in described
    row = loop.kubectl("get", "ptj", name, "--no-headers")
    assert status["plan"]["perDevice"] in row.split(), f"kubectl get ptj shows the planned memory per GPU: {row}"
