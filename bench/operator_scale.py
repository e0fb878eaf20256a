"""Operator scale benchmark (not a test): a burst of jobs against a real kube-apiserver + etcd.

1. Start etcd + kube-apiserver (audit log on, to count the operator's API requests), apply the CRD and the
   operator's RBAC, run ``python -m prefops_operator`` as its ServiceAccount, watching all namespaces.
2. Create BURST jobs at once (16 client threads) and measure, per job, the time from its creation (the create
   call returning) to the moment a watch has seen every pod of its first phase (precompute, WORKERS pods).
3. Create more jobs until TOTAL are present, wait for their pods, let the operator go idle, read its RSS.

Prints one table; targets: p99 <= 2 s, RSS <= 150 MB.

    PREFOPS_KUBE_APISERVER=... .venv/bin/python bench/operator_scale.py [--burst 200] [--total 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.fixtures import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE, OPERATOR_USER  # noqa: E402
from support.jobs import GROUP, PLURAL, VERSION, job_manifest  # noqa: E402
from support.kube import KubeCluster, wait_for  # noqa: E402
from support.operator import OperatorProcess, image_like_python  # noqa: E402

NAMESPACE = "bench"


class PodWatch:
    """Records when a watch first sees each pod of the namespace (the operator's pods, as a user would)."""

    def __init__(self, core) -> None:
        import kubernetes

        self.core, self.seen, self.lock = core, {}, threading.Lock()
        self.watch = kubernetes.watch.Watch()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # the stream breaks when the apiserver stops at the end
            self._follow()

    def _follow(self) -> None:
        for event in self.watch.stream(
            self.core.list_namespaced_pod,
            NAMESPACE,
            label_selector="prefops.dev/job-name",
            timeout_seconds=3600,
            _request_timeout=3700,
        ):
            if event["type"] == "ADDED":
                with self.lock:
                    self.seen.setdefault(event["object"].metadata.name, time.monotonic())

    def start(self) -> PodWatch:
        self.thread.start()
        return self

    def times(self) -> dict[str, float]:
        with self.lock:
            return dict(self.seen)


def create_jobs(custom, names: list[str], workers_per_job: int) -> dict[str, float]:
    """Create the jobs concurrently; return when each create call returned."""
    done: dict[str, float] = {}

    def create(name: str) -> None:
        manifest = job_manifest(name, {"reference": {"workers": workers_per_job}})
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, manifest)
        done[name] = time.monotonic()

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, names))
    return done


def first_phase_latencies(names, created, watch, workers_per_job, timeout) -> list[float]:
    pods = {n: [f"{n}-precompute-{i}" for i in range(workers_per_job)] for n in names}

    def all_seen():
        seen = watch.times()
        return all(p in seen for ps in pods.values() for p in ps) and seen

    seen = wait_for(all_seen, timeout, f"first-phase pods of {len(names)} jobs", interval=0.2)
    return [max(seen[p] for p in pods[n]) - created[n] for n in names]


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    import psutil

    return {name: sum(psutil.Process(pid).cpu_times()[:2]) for name, pid in pids.items()}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait_idle(op: OperatorProcess, timeout: float) -> None:
    def idle() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.health_port}/healthz", timeout=5) as resp:
            return json.loads(resp.read())["work-queue"]["queued"] == 0

    wait_for(idle, timeout, "the operator's work queue to drain", interval=0.5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--burst", type=int, default=200, help="jobs created at once")
    p.add_argument("--total", type=int, default=1000, help="jobs present for the memory measurement")
    p.add_argument("--pods-per-job", type=int, default=2, help="reference.workers: pods of the first phase")
    p.add_argument("--operator-workers", type=int, default=16)
    p.add_argument("--operator-python", help="python running the operator (default: a venv like its image's)")
    args = p.parse_args()
    import kubernetes

    work = Path(tempfile.mkdtemp(prefix="prefops-bench-"))
    with KubeCluster.start(work / "kube", controller_manager=False, audit_mode="batch") as cluster:
        cluster.apply_crds()
        cluster.apply_manifests(ROOT / "operator" / "rbac")
        kubeconfig = cluster.service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)
        cluster.create_namespace(NAMESPACE)
        client = cluster.admin_client()
        client.configuration.connection_pool_maxsize = 32
        custom, core = kubernetes.client.CustomObjectsApi(client), kubernetes.client.CoreV1Api(client)
        op = OperatorProcess(
            kubeconfig,
            work / "operator.log",
            extra_args=("--workers", str(args.operator_workers)),
            python=args.operator_python or image_like_python(),
        ).start()
        try:
            rss_idle = op.rss_bytes()
            watch = PodWatch(core).start()
            time.sleep(1)  # the watch is open
            mark = cluster.audit_mark()
            procs = {
                "operator": op.pid,
                **{proc.name: proc.popen.pid for proc in cluster.processes},
                "bench": os.getpid(),
            }
            cpu_before = cpu_seconds(procs)
            burst = [f"job-{i:04d}" for i in range(args.burst)]
            t0 = time.monotonic()
            created = create_jobs(custom, burst, args.pods_per_job)
            create_wall = time.monotonic() - t0
            latencies = first_phase_latencies(burst, created, watch, args.pods_per_job, 300)
            burst_wall = time.monotonic() - t0
            cpu = {k: v - cpu_before[k] for k, v in cpu_seconds(procs).items()}
            wait_idle(op, 120)
            requests = [e for e in cluster.audit_events(OPERATOR_USER, since=mark) if "objectRef" in e]
            rss_burst = op.rss_bytes()

            rest = [f"job-{i:04d}" for i in range(args.burst, args.total)]
            created_rest = create_jobs(custom, rest, args.pods_per_job)
            first_phase_latencies(rest, created_rest, watch, args.pods_per_job, 900)
            wait_idle(op, 300)
            time.sleep(3)  # kopf's per-object workers exit after 1 s idle
            rss_total = op.rss_bytes()
            present = len(custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"])
        finally:
            op.stop()
    print(f"operator python: {op.python}")
    report(args, latencies, create_wall, burst_wall, requests, rss_idle, rss_burst, rss_total, present, cpu)


def _kind(event: dict) -> str:
    ref = event["objectRef"]
    sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
    return f"{event['verb']} {ref['resource']}{sub}"


def report(args, latencies, create_wall, burst_wall, requests, rss_idle, rss_burst, rss_total, present, cpu) -> None:
    per_kind = Counter(_kind(e) for e in requests if e["verb"] not in ("list", "watch"))
    mb = 1024 * 1024
    rows = [
        ("jobs created at once", f"{args.burst} ({args.pods_per_job} first-phase pods each)", ""),
        ("creating them took", f"{create_wall:.2f} s", "16 client threads"),
        ("creation -> all first-phase pods, p50", f"{statistics.median(latencies):.2f} s", ""),
        ("creation -> all first-phase pods, p99", f"{quantile(latencies, 0.99):.2f} s", "target <= 2 s"),
        ("creation -> all first-phase pods, max", f"{max(latencies):.2f} s", ""),
        ("burst fully served after", f"{burst_wall:.2f} s", ""),
        ("operator API requests per job", f"{sum(per_kind.values()) / args.burst:.2f}", "besides its 2 watches"),
        *((f"  {kind}", f"{count / args.burst:.2f}", "") for kind, count in sorted(per_kind.items())),
        ("CPU seconds during the burst", ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()), "2 cores"),
        ("operator RSS, idle", f"{rss_idle / mb:.0f} MB", ""),
        (f"operator RSS, {args.burst} jobs", f"{rss_burst / mb:.0f} MB", ""),
        (f"operator RSS, {present} jobs present", f"{rss_total / mb:.0f} MB", "target <= 150 MB"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'operator scale':<{width}}  {'result':<40} note")
    print("-" * (width + 60))
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:<40} {note}")


if __name__ == "__main__":
    main()
