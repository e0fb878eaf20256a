"""Operator benchmark: the steady state of many running jobs with live metrics, against a real kube-apiserver + etcd.

At each size (default 250, 500 and 1,000 jobs), in a fresh apiserver:

* the jobs are created (16 client threads): half DPO with 2 precompute pods (the operator scrapes every shard), half
  SimPO whose first phase is training (it scrapes rank 0). The kubelet stand-in (``tests/support/kubelet.py``)
  marks every first-phase pod Running with an address of its own on 127.0.0.0/8, where a fake trainer endpoint
  serves the trainer's exposition (its real series, ~4 KiB) with numbers that move every second, so every scrape
  brings new progress, as a training job does;
* once every job has been scraped once (the burst is absorbed, and what the operator keeps of a scrape is there
  from then on), a window (default 10 minutes) is measured, in which
  nothing but the operator touches the apiserver: writes per second to the apiserver (its own
  ``apiserver_request_total``, by verb and resource, less what the apiserver writes itself: endpoints, leases),
  the operator's CPU (cores, from /proc), its RSS (sampled every 10 s: start, end, slope), the bytes it scraped,
  and how fresh the jobs' ``status.progress`` is at the end.

The operator runs with its defaults (``--progress-interval 15``, ``--progress-writes-per-second 10``); with
``--compare-unpaced`` each size also runs with scrapes unpaced (``--progress-writes-per-second 1e9``: every job every
15 s, as before the pacing), the baseline of the write-rate row.

    PREFOPS_KUBE_APISERVER=... .venv/bin/python bench/operator_steady.py [--quick] [--sizes 250 500 1000]
        [--minutes 10] [--compare-unpaced]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.common import Row, print_table  # noqa: E402
from operator_scale import CLIENT_THREADS, OPERATOR_WORKERS, quantile  # noqa: E402
from support.fixtures import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE  # noqa: E402
from support.jobs import GROUP, PLURAL, VERSION, job_manifest  # noqa: E402
from support.kube import KubeCluster, free_port, wait_for  # noqa: E402
from support.kubelet import Kubelet  # noqa: E402
from support.operator import OperatorProcess, image_like_python  # noqa: E402

LABEL = "prefops.dev/job-name"
WRITES = ("POST", "PUT", "PATCH", "DELETE")
#: What the apiserver writes itself (the kubernetes Service's endpoints, its lease): not the operator's.
APISERVER_OWN = {"endpoints", "endpointslices", "leases"}
FIRST_ADDRESS = ipaddress.IPv4Address("127.1.0.1")
SAMPLE_EVERY = 10.0
UNPACED = "1e9"


class FakeTrainers:
    """One trainer /metrics endpoint per address (127.1.0.1 up), all on one port, in a thread of their own. Each
    serves the trainer's series with numbers that move every second; counts scrapes and bytes."""

    def __init__(self, count: int) -> None:
        self.port, self.count = free_port(), count
        self.addresses = [str(FIRST_ADDRESS + i) for i in range(count)]
        self.scrapes = self.bytes = 0
        self.t0 = time.monotonic()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        if not self.ready.wait(60):
            raise RuntimeError("fake trainer endpoints did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            for address in self.addresses:
                await asyncio.start_server(self._serve, address, self.port, backlog=64)
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:  # keep-alive: one request after another
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                body = exposition(time.monotonic() - self.t0).encode() if path == b"/metrics" else b""
                status = b"200 OK" if body else b"404 Not Found"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
                             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
                await writer.drain()
                self.scrapes += 1
                self.bytes += len(body)
        writer.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def exposition(elapsed: float) -> str:
    """What a DPO trainer's rank 0 serves (adapters/metrics.py's series and the client's process series), with
    numbers that change every second."""
    step = int(elapsed)
    labels = 'job_name="j",job_namespace="n",phase="train"'
    gauges = {
        "step": step, "total_steps": 100000, "epoch": step / 1000, "loss": 0.7 / (1 + step / 500),
        "reward_accuracy": min(0.99, 0.5 + step / 5000), "rewards_chosen": 0.1, "rewards_rejected": -0.1,
        "reward_margin": 0.2, "logps_chosen": -120.5, "logps_rejected": -130.2, "learning_rate": 1e-5,
        "grad_norm": 3.2, "precompute_pairs_done": step * 8, "precompute_pairs_total": 800000, "eval_step": 0,
    }  # fmt: skip
    lines = []
    for name, value in gauges.items():
        lines += [f"# HELP prefops_trainer_{name} {name.replace('_', ' ')}.", f"# TYPE prefops_trainer_{name} gauge",
                  f"prefops_trainer_{name}{{{labels}}} {value}"]  # fmt: skip
    for kind in ("rss", "gpu_allocated", "gpu_reserved"):
        lines.append(f'prefops_trainer_memory_bytes{{{labels},rank="0",kind="{kind}"}} {2.5e9 + step}')
    lines.append(f'prefops_trainer_tokens_per_second{{{labels},rank="0"}} {10000 + step % 97}')
    for phase in ("precompute", "train", "export", "done", "failed"):
        lines.append(f'prefops_trainer_phase{{{labels},prefops_trainer_phase="{phase}"}} {int(phase == "train")}')
    for gen in range(3):
        for what in ("objects_collected", "objects_uncollectable", "collections"):
            lines.append(f'python_gc_{what}_total{{generation="{gen}"}} {step * (gen + 1)}.0')
    for name in ("virtual_memory_bytes", "resident_memory_bytes", "start_time_seconds", "cpu_seconds_total",
                 "open_fds", "max_fds"):  # fmt: skip
        lines.append(f"process_{name} {1.7e9 + step}")
    return "\n".join(lines) + "\n"


def manifest(i: int) -> dict:
    if i % 2 == 0:
        return job_manifest(f"job-{i:05d}", {"reference": {"workers": 2}})
    return job_manifest(f"job-{i:05d}", {"algorithm": {"name": "simpo"}})


def first_phase_pods(i: int) -> list[str]:
    name = f"job-{i:05d}"
    return [f"{name}-precompute-a1-0", f"{name}-precompute-a1-1"] if i % 2 == 0 else [f"{name}-train-a1-0"]


def start_jobs(cluster, custom, core, namespace: str, count: int, trainers: FakeTrainers, timeout: float) -> None:
    """Create the jobs, wait for their first-phase pods, run each at an address of its own."""
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(lambda i: custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                                       manifest(i)), range(count)))  # fmt: skip
    pods = [p for i in range(count) for p in first_phase_pods(i)]

    def all_created() -> bool:
        return len(core.list_namespaced_pod(namespace, label_selector=LABEL).items) >= len(pods)

    wait_for(all_created, timeout, f"{len(pods)} first-phase pods", interval=1.0)
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(lambda a: Kubelet(core, a[1]).run(namespace, a[0]), zip(pods, trainers.addresses, strict=False)))


def apiserver_writes(cluster) -> dict[tuple[str, str], float]:
    """apiserver_request_total summed by (verb, resource[/subresource]) over the write verbs."""
    out: dict[tuple[str, str], float] = {}
    text = cluster.get("/metrics", accept="text/plain").decode()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("verb") not in WRITES or labels.get("resource") in APISERVER_OWN:
            continue
        resource = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        key = (labels["verb"], resource)
        out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.mean(xs), statistics.mean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def window(cluster, op: OperatorProcess, trainers: FakeTrainers, seconds: float) -> dict:
    """Measure the steady state for ``seconds``."""
    writes0, cpu0, scrapes0, bytes0 = apiserver_writes(cluster), cpu_seconds(op.pid), trainers.scrapes, trainers.bytes
    t0 = time.monotonic()
    times, rss = [0.0], [op.rss_bytes() / 2**20]
    while (elapsed := time.monotonic() - t0) < seconds:
        time.sleep(min(SAMPLE_EVERY, seconds - elapsed))
        times.append(time.monotonic() - t0)
        rss.append(op.rss_bytes() / 2**20)
    span = time.monotonic() - t0
    writes1 = apiserver_writes(cluster)
    by_kind = {k: (writes1.get(k, 0) - writes0.get(k, 0)) / span for k in writes1}
    return {
        "writes_per_s": sum(by_kind.values()),
        "writes_by_kind": {f"{v} {r}": round(x, 2) for (v, r), x in sorted(by_kind.items()) if x > 0},
        "cpu_cores": (cpu_seconds(op.pid) - cpu0) / span,
        "rss_start_mb": rss[0],
        "rss_end_mb": rss[-1],
        "rss_slope_mb_per_min": slope(times, rss) * 60,
        "scrapes_per_s": (trainers.scrapes - scrapes0) / span,
        "scraped_mb": (trainers.bytes - bytes0) / 2**20,
    }


def progress_age(custom, namespace: str) -> list[float]:
    """Seconds since each job's status.progress was last scraped (a job never scraped counts as the window)."""
    now = datetime.now(UTC)
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    ages = []
    for job in items:
        stamp = ((job.get("status") or {}).get("progress") or {}).get("lastScrapeTime")
        ages.append((now - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds() if stamp else -1)
    return ages


def run_size(args, count: int, pacing: str, work: Path) -> dict:
    import kubernetes

    trainers = FakeTrainers(count * 2)
    label = f"{count}-{'unpaced' if pacing == UNPACED else 'paced'}"
    try:
        with KubeCluster.start(work / f"kube-{label}", controller_manager=False, audit=False) as cluster:
            cluster.apply_crds()
            cluster.apply_manifests(ROOT / "operator" / "rbac")
            kubeconfig = cluster.service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)
            client = cluster.admin_client()
            client.configuration.connection_pool_maxsize = 2 * CLIENT_THREADS + 4
            custom, core = kubernetes.client.CustomObjectsApi(client), kubernetes.client.CoreV1Api(client)
            namespace = cluster.create_namespace("steady")
            extra = ("--workers", str(OPERATOR_WORKERS), "--trainer-metrics-port", str(trainers.port),
                     "--progress-writes-per-second", pacing)  # fmt: skip
            op = OperatorProcess(kubeconfig, work / f"operator-{label}.log", namespaces=(namespace,),
                                 extra_args=extra, python=image_like_python())  # fmt: skip
            op.start()
            try:
                idle_rss = op.rss_bytes() / 2**20
                timeout = 300 + 2.0 * count
                start_jobs(cluster, custom, core, namespace, count, trainers, timeout)
                wait_for(lambda: min(progress_age(custom, namespace)) >= 0, timeout, "every job scraped once", 2.0)
                out = window(cluster, op, trainers, args.minutes * 60)
                ages = [a for a in progress_age(custom, namespace) if a >= 0]
                out |= {"idle_rss_mb": idle_rss, "scraped_jobs": len(ages), "jobs": count,
                        "progress_age_p50": quantile(ages, 0.5) if ages else None,
                        "progress_age_max": max(ages) if ages else None}  # fmt: skip
                return out
            finally:
                op.stop()
    finally:
        trainers.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small smoke run (numbers mean little)")
    p.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000], help="running jobs")
    p.add_argument("--minutes", type=float, default=10.0, help="the measured window at each size")
    p.add_argument("--compare-unpaced", action="store_true", help="also run each size with scrapes unpaced")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.minutes = [10, 20, 40], 0.5
    work = Path(tempfile.mkdtemp(prefix="prefops-bench-steady-"))
    res: dict[tuple[int, str], dict] = {}
    for count in args.sizes:
        for pacing in ["10", UNPACED] if args.compare_unpaced else ["10"]:
            res[count, pacing] = out = run_size(args, count, pacing, work)
            print(f"  {count} jobs, writes/s cap {pacing}: {out}", file=sys.stderr, flush=True)
    report(args, res)


def report(args, res: dict) -> None:
    sizes = sorted({c for c, _ in res})
    paced = [res[c, "10"] for c in sizes]
    print("\n### Operator at steady state: running jobs with live metrics\n")
    print(
        f"- {args.minutes:g}-minute window at each size, after the creation burst; kube-apiserver 1.20.2 + etcd, "
        "no audit log; half the jobs precomputing on 2 pods, half training on 1; every scrape brings new numbers"
    )
    print("- the operator with its defaults: --progress-interval 15, --progress-writes-per-second 10, 16 workers\n")
    head = "| jobs | apiserver writes/s | writes by kind | operator CPU (cores) | RSS idle / start / end (MB) | " \
           "RSS slope (MB/min) | scrapes/s | scraped in window (MB) | progress age p50 / max (s) |"  # fmt: skip
    print(head)
    print("|---|---|---|---|---|---|---|---|---|")
    for c, r in zip(sizes, paced, strict=True):
        print(f"| {c} | {r['writes_per_s']:.2f} | {r['writes_by_kind']} | {r['cpu_cores']:.3f} | "
              f"{r['idle_rss_mb']:.0f} / {r['rss_start_mb']:.0f} / {r['rss_end_mb']:.0f} | "
              f"{r['rss_slope_mb_per_min']:.2f} | {r['scrapes_per_s']:.2f} | {r['scraped_mb']:.1f} | "
              f"{r['progress_age_p50']:.0f} / {r['progress_age_max']:.0f} |")  # fmt: skip
    if len(sizes) >= 3:
        fits = {key: slope([float(c) for c in sizes], [r[key] for r in paced]) * 1000
                for key in ("writes_per_s", "cpu_cores", "rss_end_mb")}  # fmt: skip
        print(f"\nfitted slopes per 1,000 jobs: writes/s {fits['writes_per_s']:.2f}, CPU {fits['cpu_cores']:.3f} "
              f"cores, RSS {fits['rss_end_mb']:.1f} MB")  # fmt: skip
    else:
        print("\nno fitted slopes: fewer than 3 sizes")
    if args.compare_unpaced:
        rows = [Row(f"apiserver writes/s, {c} jobs", [res[c, "10"]["writes_per_s"]],
                    [res[c, UNPACED]["writes_per_s"]], "/s", None, "scrapes unpaced") for c in sizes]  # fmt: skip
        rows += [Row(f"operator CPU, {c} jobs", [res[c, "10"]["cpu_cores"]], [res[c, UNPACED]["cpu_cores"]],
                     "cores", None, "scrapes unpaced") for c in sizes]  # fmt: skip
        print_table("Pacing the progress scrapes: paced / unpaced", rows, ["one run per size and mode"])


if __name__ == "__main__":
    main()
