"""Operator scale benchmark: a burst of jobs against a real kube-apiserver + etcd, measured over the API floor.

For each scale (200 and 1,000 jobs) and repetition, two runs, interleaved, each in a fresh namespace:

* operator: 16 client threads create the jobs; the operator (``python -m prefops_operator`` as its
  ServiceAccount, 16 workers, watching that namespace) creates each job's first-phase pods (the precompute pods),
  its ConfigMap and Service, and reports status.
* API floor: the same 16 client threads create the same jobs (no operator watches that namespace), and 16 other
  client threads, as many as the operator's workers, take each job as soon as it exists and create the very pods the
  operator would (its pod manifests, copied) directly: an operator with no overhead at all, in the same run.

Latency per job: from its create call returning to a watch having seen every first-phase pod of it (the same
watch for both). Rows: p50 and p99 of the operator's latency over the floor's (target: p99 <= 3x the floor), and
the operator's RSS with 1,000 jobs present over its RSS when idle (target <= 2x).

    PREFOPS_KUBE_APISERVER=... .venv/bin/python bench/operator_scale.py [--quick] [--reps 3] [--scales 200 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import queue
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.common import Row, print_table  # noqa: E402
from support.fixtures import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE  # noqa: E402
from support.jobs import GROUP, PLURAL, VERSION, job_manifest  # noqa: E402
from support.kube import KubeCluster, wait_for  # noqa: E402
from support.operator import OperatorProcess, image_like_python  # noqa: E402

CLIENT_THREADS = 16
OPERATOR_WORKERS = 16
LABEL = "prefops.dev/job-name"


class PodWatch:
    """When a watch first saw each pod (all namespaces), keyed by (namespace, name)."""

    def __init__(self, core) -> None:
        import kubernetes

        self.core, self.seen, self.lock = core, {}, threading.Lock()
        self.watch = kubernetes.watch.Watch()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # the stream breaks when the apiserver stops at the end
            for event in self.watch.stream(
                self.core.list_pod_for_all_namespaces, label_selector=LABEL, timeout_seconds=7200
            ):
                if event["type"] == "ADDED":
                    meta = event["object"].metadata
                    with self.lock:
                        self.seen.setdefault((meta.namespace, meta.name), time.monotonic())

    def latencies(self, namespace: str, created: dict[str, float], pods: int, timeout: float) -> list[float]:
        """Per job: last of its first-phase pods seen - its creation; waits until every pod was seen."""
        names = {n: [(namespace, f"{n}-precompute-a1-{i}") for i in range(pods)] for n in created}

        def every_pod_seen():
            with self.lock:
                seen = dict(self.seen)
            return seen if all(k in seen for ks in names.values() for k in ks) else None

        seen = wait_for(every_pod_seen, timeout, f"first-phase pods of {len(created)} jobs in {namespace}", 0.2)
        return [max(seen[k] for k in names[n]) - created[n] for n in created]


def manifest(name: str, workers: int) -> dict:
    return job_manifest(name, {"reference": {"workers": workers}})


def create_jobs(custom, namespace: str, names: list[str], workers: int, then=None) -> dict[str, float]:
    """Create the jobs from CLIENT_THREADS threads; return when each create call returned. ``then(job)`` is
    called with each created job (the floor's pod creators take it from there)."""
    created: dict[str, float] = {}

    def create(name: str) -> None:
        job = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest(name, workers))
        created[name] = time.monotonic()
        if then:
            then(job)

    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(create, names))
    return created


def pod_templates(cluster, custom, core, kubeconfig: Path, work: Path, workers: int) -> list[dict]:
    """The first-phase pods the operator creates for one job, as manifests to create again elsewhere."""
    ns = cluster.create_namespace("template")
    with OperatorProcess(kubeconfig, work / "operator-template.log", namespaces=(ns,), python=image_like_python()):
        create_jobs(custom, ns, ["template"], workers)
        pods = wait_for(lambda: _pods(core, ns) if len(_pods(core, ns)) == workers else None, 60, "template pods")
    templates = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        meta = pod["metadata"]
        keep = {k: meta[k] for k in ("name", "labels", "annotations") if meta.get(k)}
        spec = {k: v for k, v in pod["spec"].items() if k != "nodeName"}
        templates.append({"apiVersion": "v1", "kind": "Pod", "metadata": keep, "spec": spec})
    return templates


def _pods(core, namespace: str) -> list[dict]:
    items = core.list_namespaced_pod(namespace, label_selector=LABEL).items
    return [core.api_client.sanitize_for_serialization(p) for p in items]


def floor_pod(template: dict, job: dict) -> dict:
    pod = copy.deepcopy(template)
    name = job["metadata"]["name"]
    pod["metadata"]["name"] = template["metadata"]["name"].replace("template", name, 1)
    pod["metadata"]["labels"] = {k: (name if k == LABEL else v) for k, v in template["metadata"]["labels"].items()}
    pod["metadata"]["ownerReferences"] = [
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PreferenceTrainingJob", "name": name,
         "uid": job["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    ]  # fmt: skip
    return pod


def floor_run(cluster, custom, core, watch, templates, scale: int, label: str, workers: int, timeout: float):
    ns = cluster.create_namespace(f"floor-{label}")
    _service_accounts(core, ns, templates)
    jobs: queue.Queue = queue.Queue()

    def create_pods() -> None:
        while (job := jobs.get()) is not None:
            for t in templates:
                core.create_namespaced_pod(ns, floor_pod(t, job))

    creators = [threading.Thread(target=create_pods) for _ in range(OPERATOR_WORKERS)]
    for t in creators:
        t.start()
    created = create_jobs(custom, ns, [f"job-{i:04d}" for i in range(scale)], workers, then=jobs.put)
    latencies = watch.latencies(ns, created, workers, timeout)
    for _ in creators:
        jobs.put(None)
    for t in creators:
        t.join()
    return {"latencies": latencies}


def _service_accounts(core, namespace: str, templates: list[dict]) -> None:
    for name in {t["spec"].get("serviceAccountName") for t in templates} - {None, "default"}:
        core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})


def operator_run(cluster, custom, core, watch, kubeconfig, work, scale: int, label: str, workers: int, timeout):
    ns = cluster.create_namespace(f"operator-{label}")
    op = OperatorProcess(kubeconfig, work / f"operator-{label}.log", namespaces=(ns,),
                         extra_args=("--workers", str(OPERATOR_WORKERS)), python=image_like_python())  # fmt: skip
    op.start()
    try:
        time.sleep(2)  # settled after start-up
        idle = op.rss_bytes()
        created = create_jobs(custom, ns, [f"job-{i:04d}" for i in range(scale)], workers)
        latencies = watch.latencies(ns, created, workers, timeout)
        wait_idle(op, timeout)
        time.sleep(3)  # kopf's per-object workers exit after 1 s idle
        return {"latencies": latencies, "rss_idle_mb": idle / 2**20, "rss_jobs_mb": op.rss_bytes() / 2**20}
    finally:
        op.stop()


def wait_idle(op: OperatorProcess, timeout: float) -> None:
    def idle() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.health_port}/healthz", timeout=5) as resp:
            return json.loads(resp.read())["work-queue"]["queued"] == 0

    wait_for(idle, timeout, "the operator's work queue to drain", interval=0.5)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small smoke run (numbers mean little)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--scales", type=int, nargs="+", default=[200, 1000], help="jobs created at once")
    p.add_argument("--pods-per-job", type=int, default=2, help="reference.workers: pods of the first phase")
    args = p.parse_args()
    if args.quick:
        args.reps, args.scales = 1, [20, 60]
    import kubernetes

    work = Path(tempfile.mkdtemp(prefix="prefops-bench-operator-"))
    res: dict[tuple[int, str], list[dict]] = {}
    with KubeCluster.start(work / "kube", controller_manager=False, audit=False) as cluster:
        cluster.apply_crds()
        cluster.apply_manifests(ROOT / "operator" / "rbac")
        kubeconfig = cluster.service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)
        client = cluster.admin_client()
        client.configuration.connection_pool_maxsize = 2 * CLIENT_THREADS + 4
        custom, core = kubernetes.client.CustomObjectsApi(client), kubernetes.client.CoreV1Api(client)
        watch = PodWatch(core)
        templates = pod_templates(cluster, custom, core, kubeconfig, work, args.pods_per_job)
        for scale in args.scales:
            timeout = 120 + scale * 1.0
            for rep in range(args.reps):
                for kind in ["floor", "operator"] if rep % 2 == 0 else ["operator", "floor"]:
                    label = f"{scale}-{rep}"
                    if kind == "floor":
                        out = floor_run(cluster, custom, core, watch, templates, scale, label, args.pods_per_job,
                                        timeout)  # fmt: skip
                    else:
                        out = operator_run(cluster, custom, core, watch, kubeconfig, work, scale, label,
                                           args.pods_per_job, timeout)  # fmt: skip
                    res.setdefault((scale, kind), []).append(out)
                    lat = out["latencies"]
                    print(f"  {kind} {scale} jobs rep {rep + 1}: p50 {statistics.median(lat):.2f} s, "
                          f"p99 {quantile(lat, 0.99):.2f} s", file=sys.stderr, flush=True)  # fmt: skip
    report(args, res)


def report(args, res) -> None:
    rows = []
    for scale in args.scales:
        ops, floors = res[(scale, "operator")], res[(scale, "floor")]
        for q, target in ((0.5, None), (0.99, "<= 3.0")):
            name = f"operator: creation -> first-phase pods, p{round(q * 100)}, {scale} jobs"
            ours = [quantile(o["latencies"], q) for o in ops]
            base = [quantile(f["latencies"], q) for f in floors]
            rows.append(Row(name, ours, base, "s", target, "API floor"))
    big = max(args.scales)
    ops = res[(big, "operator")]
    rows.append(Row(f"operator RSS at {big} jobs / idle", [o["rss_jobs_mb"] for o in ops],
                    [o["rss_idle_mb"] for o in ops], "MB", "<= 2.0", "the operator, idle"))  # fmt: skip
    notes = [
        f"{args.pods_per_job} first-phase pods per job; {CLIENT_THREADS} client threads create the jobs; "
        f"the operator runs {OPERATOR_WORKERS} workers, the floor {OPERATOR_WORKERS} pod-creating client threads",
        "kube-apiserver 1.20.2 + etcd on this machine (no audit log); each run in a fresh namespace",
        "p50 rows carry no target: the issue sets one for p99",
    ]
    print_table("Operator: job creation to first-phase pods, over the API floor", rows, notes)


if __name__ == "__main__":
    main()
