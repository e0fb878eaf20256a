"""Benchmark: the precompute phase's time and peak host memory (RSS) against the number of rows (issue 21 item 3).

The shipped tiny model (``examples/tiny/model``, float32 on the CPU) and a synthetic preference dataset of N rows
(short prompts and completions drawn from the model's own vocabulary, seeded) make each row cheap to score, so what
grows with N is the phase's own bookkeeping: loading, tokenizing, holding and writing the rows. For each N and each
shard count S, the S shards run one after another, each in a process of its own (as S pods would), each reporting
its own peak RSS (``VmHWM`` in ``/proc/self/status``: not ``getrusage``'s ``ru_maxrss``, which Linux carries over
from the parent through fork and exec), its peak anonymous RSS (sampled, :class:`AnonPeak`: ``VmHWM`` also counts
the pages of the memory-mapped Arrow files it read) and its time in the phase. A last process loads the reference
table the way training does (``phases.train.reference.load_reference``) and reports its time and peak RSS too.

Printed: per N and S the slowest shard's seconds and the largest shard's peak RSS, then least-squares fits
``seconds = a + b x N`` and ``peak = c + d x N`` per S, with ``d`` in bytes per row. Goal: time linear in N, and
``d <= 200`` bytes per row.

    python bench/precompute_rows.py [--quick] [--large] [--reps 1] [--seed 0]
    python bench/precompute_rows.py --one JOB.yaml SHARD NUM_SHARDS   # one shard, printed as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib.common import QUIET_ENV, ROOT, machine, peak_rss_mb

TINY = ROOT / "examples" / "tiny" / "model"
ROWS = (1_000, 10_000, 100_000)
QUICK_ROWS = (1_000, 10_000, 30_000)
LARGE_ROWS = (1_000_000,)
SHARDS = (1, 2)
TARGET_B_PER_ROW = 200
#: Words of the tiny model's vocabulary the synthetic rows are made of (the tokenizer is word-level).
WORDS = (
    "what",
    "color",
    "is",
    "the",
    "sky",
    "snow",
    "grass",
    "sun",
    "blood",
    "coal",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "plus",
    "glad",
    "you",
    "asked",
    "it",
    "happy",
    "to",
    "help",
    "thanks",
    "for",
    "asking",
    "stop",
    "bothering",
    "me",
    "go",
    "away",
    "whatever",
    "ugh",
)


def write_dataset(path: Path, n: int, seed: int) -> None:
    """``n`` rows of short prompts (4-10 words) and completions (3-9 words), as JSONL."""
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    with path.open("w") as f:
        for _ in range(n):
            row = {"prompt": text(4, 10) + " ?", "chosen": " " + text(3, 9) + " .", "rejected": " " + text(3, 9)}
            f.write(json.dumps(row) + "\n")


def write_job(root: Path, data: Path, shards: int) -> Path:
    import yaml

    doc = {
        "apiVersion": "prefops.dev/v1alpha1",
        "kind": "PreferenceTrainingJob",
        "metadata": {"name": f"rows-{shards}"},
        "spec": {
            "model": {"source": str(TINY), "dtype": "float32"},
            "dataset": {"source": str(data), "maxLength": 64},
            "algorithm": {"name": "dpo", "beta": 0.1},
            "training": {"perDeviceBatchSize": 8},
            "reference": {"batchSize": 256, "workers": shards},
            "resources": {"gpusPerNode": 0},
            "output": {"uri": str(root / "out")},
            "storage": {"uri": str(root / "work")},
        },
    }
    path = root / f"job-{shards}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class AnonPeak:
    """The largest ``RssAnon`` (``/proc/self/status``) seen by a thread reading it every 10 ms: the process's own
    memory, without the file-backed pages of memory-mapped Arrow files that ``VmHWM`` also counts (clean pages the
    kernel drops under pressure rather than failing). Linux keeps no high-water mark of it, so it is sampled."""

    def __init__(self) -> None:
        import threading

        self.peak, self._done = 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _read(self) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no RssAnon in /proc/self/status")

    def _watch(self) -> None:
        while True:
            self.peak = max(self.peak, self._read())
            if self._done.wait(0.01):
                return

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return max(self.peak, self._read())


def one(job_path: Path, shard: int, num_shards: int) -> None:
    """One precompute shard in this process (``num_shards`` 0: load the table as training does); print JSON."""
    from prefops_trainer.adapters.jobfile import load_job
    from prefops_trainer.inputs import load_inputs

    anon = AnonPeak()
    start = time.perf_counter()
    inputs = load_inputs(load_job(job_path))
    if num_shards:
        from prefops_trainer.phases import precompute

        precompute.run(inputs, shard, num_shards)
    else:
        from prefops_trainer.phases.train.reference import load_reference

        load_reference(inputs)
    seconds = time.perf_counter() - start
    print(json.dumps({"peak": peak_rss_mb() * 2**20, "anon_peak": anon.stop(), "seconds": seconds}), flush=True)
    os._exit(0)  # as the trainer's CLI ends: no interpreter teardown racing torch's threads


def measure(root: Path, job: Path, shard: int, num_shards: int) -> dict:
    cache = root / "hf-cache" / f"{job.stem}-{shard}-{num_shards}-{time.monotonic_ns()}"
    env = {**QUIET_ENV, "PYTHONPATH": str(ROOT / "trainer" / "src"), "HF_DATASETS_CACHE": str(cache),
           "HF_HOME": str(cache / "home"), "PREFOPS_CACHE_DIR": str(root / "sources")}  # fmt: skip
    argv = [sys.executable, __file__, "--one", str(job), str(shard), str(num_shards)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"shard {shard}/{num_shards} of {job} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_size(n: int, shards: int, seed: int) -> dict:
    """Every shard of a fresh cache for ``n`` rows, one process each, then training's load of the table."""
    with tempfile.TemporaryDirectory(prefix="prefops-bench-rows-") as tmp:
        root = Path(tmp)
        write_dataset(root / "pairs.jsonl", n, seed)
        job = write_job(root, root / "pairs.jsonl", shards)
        runs = [measure(root, job, k, shards) for k in range(shards)]
        load = measure(root, job, 0, 0)
    return {"seconds": max(r["seconds"] for r in runs), "peak": max(r["peak"] for r in runs),
            "anon_peak": max(r["anon_peak"] for r in runs),
            "load_seconds": load["seconds"], "load_peak": load["peak"]}  # fmt: skip


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares ``y = a + b x``: (a, b)."""
    b, a = statistics.linear_regression(xs, ys)
    return a, b


def verdict(bytes_per_row: float) -> str:
    return "met" if bytes_per_row <= TARGET_B_PER_ROW else "**MISSED**"


def report(results: dict[tuple[int, int], dict], reps: int) -> None:
    mb = 2**20
    print("\n### Precompute: time and peak RSS against rows (tiny model, float32, CPU)\n")
    print("| rows | shards | precompute s (slowest shard) | peak RSS (largest shard) | peak anonymous RSS "
          "| table load s | load peak RSS |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for (n, s), r in sorted(results.items()):
        print(f"| {n:,} | {s} | {r['seconds']:.1f} | {r['peak'] / mb:.0f} MB | {r['anon_peak'] / mb:.0f} MB "
              f"| {r['load_seconds']:.1f} | {r['load_peak'] / mb:.0f} MB |")  # fmt: skip
    print()
    for s in sorted({s for _, s in results}):
        rows = sorted((n, r) for (n, k), r in results.items() if k == s)
        xs = [float(n) for n, _ in rows]
        a, b = fit(xs, [r["seconds"] for _, r in rows])
        c, d = fit(xs, [r["peak"] for _, r in rows])
        ac, ad = fit(xs, [r["anon_peak"] for _, r in rows])
        lc, ld = fit(xs, [r["load_peak"] for _, r in rows])
        print(
            f"- {s} shard(s): seconds = {a:.1f} + {b * 1e3:.3f} ms x rows; peak = {c / mb:.0f} MB + {d:.0f} B x rows "
            f"(goal <= {TARGET_B_PER_ROW} B/row: {verdict(d)}); anonymous peak = {ac / mb:.0f} MB + {ad:.0f} B x rows "
            f"({verdict(ad)}); table load peak = {lc / mb:.0f} MB + {ld:.0f} B x rows"
        )
    print(f"\n{reps} repetition(s), median; {machine()}")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"rows {', '.join(map(str, QUICK_ROWS))} (a smoke run)")
    parser.add_argument("--large", action="store_true", help="add 1M rows (minutes per shard)")
    parser.add_argument("--reps", type=int, default=1, help="repetitions of each size (default 1; the median)")
    parser.add_argument("--seed", type=int, default=0, help="the synthetic data's seed")
    parser.add_argument("--one", nargs=3, metavar=("JOB", "SHARD", "NUM_SHARDS"))
    args = parser.parse_args()
    if args.one:
        one(Path(args.one[0]), int(args.one[1]), int(args.one[2]))
        return
    sizes = (QUICK_ROWS if args.quick else ROWS) + (LARGE_ROWS if args.large else ())
    results: dict[tuple[int, int], dict] = {}
    for n in sizes:
        for s in SHARDS:
            reps = [run_size(n, s, args.seed + r) for r in range(args.reps)]
            results[n, s] = {k: statistics.median(r[k] for r in reps) for k in reps[0]}
            r = results[n, s]
            print(
                f"{n:,} rows, {s} shard(s): {r['seconds']:.1f} s, peak {r['peak'] / 2**20:.0f} MB; "
                f"table load {r['load_seconds']:.1f} s, peak {r['load_peak'] / 2**20:.0f} MB",
                flush=True,
            )
    report(results, args.reps)


if __name__ == "__main__":
    main()
