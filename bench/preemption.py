"""Benchmark: optimizer steps lost per preemption, graceful (SIGTERM) against the kill that ended a pod before the
trainer handled SIGTERM.

Per repetition (kinds interleaved), one ``prefops-trainer train`` of the tiny model with 2 ranks under torchrun (CPU,
gloo), ``checkpointEverySteps`` 10, is stopped at a random step between two checkpoints:

* SIGTERM, DDP and ZeRO-3: what the kubelet sends a deleted, preempted or drained pod; the ranks save a checkpoint at
  the next step boundary and exit 75.
* SIGKILL, DDP: what happened before the trainer handled SIGTERM (torchrun ended its ranks, or the kubelet killed the
  pod when the grace ran out): the restart goes back to the last periodic checkpoint.

Steps lost = the last step the run logged - the step of the newest complete checkpoint (where a restart resumes).
Also: the seconds from the signal to the pod's exit, which ``terminationGracePeriodSeconds`` must cover (a save of
the tiny model here: for a real job add its checkpoint's upload time).

    python bench/preemption.py [--quick] [--reps 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib.common import QUIET_ENV, ROOT, interleaved, machine, spread

TINY = ROOT / "examples" / "tiny"
CLI = [sys.executable, "-m", "prefops_trainer"]
CHECKPOINT_EVERY = 10
KINDS = {"sigterm-ddp": (signal.SIGTERM, None), "sigterm-zero3": (signal.SIGTERM, {"stage": 3}),
         "sigkill-ddp": (signal.SIGKILL, None)}  # fmt: skip


def job(root: Path, name: str, deepspeed: dict | None) -> Path:
    training = {"maxSteps": 400, "checkpointEverySteps": CHECKPOINT_EVERY, "perDeviceBatchSize": 4,
                "learningRate": 0.005, **({"deepspeed": deepspeed} if deepspeed else {})}  # fmt: skip
    doc = {
        "apiVersion": "prefops.dev/v1alpha1",
        "kind": "PreferenceTrainingJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"source": str(TINY / "model"), "dtype": "float32", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
            "dataset": {"source": str(TINY / "prefs.jsonl"), "maxLength": 64, "maxSamples": 64},
            "algorithm": {"name": "dpo"},
            "training": training,
            "resources": {"gpusPerNode": 0, "processesPerNode": 2},
            "output": {"uri": str(root / "out" / name)},
            "storage": {"uri": str(root / "work")},
        },
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def env() -> dict[str, str]:
    return {**os.environ, **QUIET_ENV, "PREFOPS_METRICS_PORT": "off", "PREFOPS_TERMINATION_GRACE_SECONDS": "300"}


def preempt(path: Path, sig: signal.Signals, at_step: int) -> dict[str, float]:
    """Train ``path``, send ``sig`` once step ``at_step`` is logged; steps done, resumable step, seconds to exit."""
    proc = subprocess.Popen([*CLI, "train", str(path)], env=env(), stderr=subprocess.PIPE, text=True)
    steps: list[int] = []

    def read() -> None:
        for line in proc.stderr:
            found = re.search(r"\bstep (\d+)/\d+ loss=", line)
            if found:
                steps.append(int(found.group(1)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 1800
    while not (steps and steps[-1] >= at_step):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the run ended before step {at_step} (exit {proc.returncode})")
        time.sleep(0.02)
    signalled = time.monotonic()
    if sig == signal.SIGKILL:
        kill_tree(proc.pid)  # the whole pod, as the kubelet kills a container: launcher, torchrun and ranks
    else:
        proc.send_signal(sig)  # the pod's process, as the kubelet sends it
    code = proc.wait()
    exited = time.monotonic() - signalled
    reader.join(timeout=30)
    if sig == signal.SIGTERM and code != 75:
        raise SystemExit(f"SIGTERM: exit {code}, expected 75")
    return {"done": max(steps), "resumable": newest_checkpoint(path.parent / "work", path.stem), "seconds": exited}


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process under it (torchrun starts each rank in a session of its own)."""
    import psutil

    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def newest_checkpoint(work: Path, name: str) -> int:
    markers = work.glob(f"jobs/default/{name}/*/attempts/0/checkpoints/checkpoint-*/prefops-complete.json")
    return max((int(p.parent.name.split("-")[1]) for p in markers), default=0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one repetition: a smoke run")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    reps = 1 if args.quick else args.reps
    rng = random.Random(args.seed)
    results: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
    with tempfile.TemporaryDirectory(prefix="prefops-bench-preempt-") as tmp:
        root = Path(tmp)
        first = job(root, "warmup", None)
        subprocess.run([*CLI, "precompute", str(first)], env=env(), check=True, capture_output=True)
        for rep, kind in interleaved(reps, list(KINDS)):
            sig, deepspeed = KINDS[kind]
            at = CHECKPOINT_EVERY * rng.randint(1, 3) + rng.randint(2, CHECKPOINT_EVERY - 2)  # between checkpoints
            outcome = preempt(job(root, f"{kind}-{rep}", deepspeed), sig, at)
            results[kind].append(outcome)
            print(f"{kind} rep {rep}: signal after step {at}: {outcome}", file=sys.stderr)
    print_results(results, reps)


def print_results(results: dict[str, list[dict[str, float]]], reps: int) -> None:
    print("\n### Steps lost per preemption (2 CPU ranks, gloo; tiny model)\n")
    print(f"- checkpointEverySteps {CHECKPOINT_EVERY}; the signal lands at a random step between two checkpoints")
    print("- steps lost = last step logged - newest complete checkpoint (where the restart resumes)\n")
    print("| stop | steps lost, median (min-max) | goal | signal to exit, s | |")
    print("|---|---|---|---|---|")
    for kind, outcomes in results.items():
        lost = [o["done"] - o["resumable"] for o in outcomes]
        seconds = spread([o["seconds"] for o in outcomes], "{:.1f}")
        graceful = kind.startswith("sigterm")
        goal = "<= 1" if graceful else f"<= {CHECKPOINT_EVERY} (checkpointEverySteps)"
        met = max(lost) <= (1 if graceful else CHECKPOINT_EVERY)
        mark = "met" if met else "**missed**"
        print(f"| {kind} | {spread(lost, '{:.0f}')} | {goal} | {seconds} | {mark} |")
    graceful = [o["done"] - o["resumable"] for k, v in results.items() if k.startswith("sigterm") for o in v]
    print(f"\n{reps} repetitions; mean steps lost on SIGTERM {statistics.mean(graceful):.2f}; {machine()}")


if __name__ == "__main__":
    main()
