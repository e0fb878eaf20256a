"""Benchmark: what a node's death costs a training job on the test cluster (``make cluster NODES=2``), with its
defaults: the node lifecycle controller's 40 s ``--node-monitor-grace-period`` and ``spec.nodeLostGraceSeconds``
20.

Per repetition, a one-node job of the tiny model (one process, ``checkpointEverySteps`` 4) trains; at a random step
between two checkpoints (after the first) its node is killed (``cluster.sh kill-node``: kubelet, containerd and every
process of its pods SIGKILLed). The job resumes on the other node; the node is restored once the job succeeded.
Measured from the kill, with the timestamps the cluster wrote:

- the node marked not Ready (its Ready condition's lastTransitionTime), the group recreated (``status.lastRestart
  .time``), the new pod running (``lastRestart.resumedTime``) and its first training step (the container log's
  timestamp): the goal is the first new step within 90 s;
- steps lost: the last step the killed pod logged minus the checkpoint the new pod resumed from (at most 4 here).

    python bench/disruption.py [--quick] [--reps 3]

It needs root (the cluster's nodes), uses the cluster when it is up and otherwise brings it up (the images built
from the checkout) and takes it down afterwards.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.common import machine, spread  # noqa: E402
from support.kube import wait_for  # noqa: E402
from support.loop import JOB_TIMEOUT, Loop, StepLog, open_loop, timestamp  # noqa: E402
from support.node import node_cluster  # noqa: E402

EVERY = 4  # checkpointEverySteps
GOAL = 90.0  # seconds from the node's death to the first new training step
JOB = {
    "resources.nodes": 1,
    "reference.workers": 1,
    "training.deepspeed": None,
    "training.checkpointEverySteps": EVERY,
    "training.maxSteps": 32,
    "dataset.maxSamples": 128,
    "backoffLimit": 0,
}


@dataclass(frozen=True)
class Outcome:
    """One node death: seconds from the kill to each milestone (None: not reached), and the steps lost."""

    killed_after: int
    resumed_from: int | None
    not_ready: float | None
    restarted: float | None
    running: float | None
    first_step: float | None

    @property
    def lost(self) -> int | None:
        return None if self.resumed_from is None else self.killed_after - self.resumed_from

    @property
    def met(self) -> bool:
        return self.first_step is not None and self.first_step <= GOAL and self.lost is not None


def since(start: datetime, value: str | None) -> float | None:
    return None if not value else round((timestamp(value) - start).total_seconds(), 1)


def not_ready_time(loop: Loop, node: str) -> str | None:
    """When the node's Ready condition last changed, while it is not Ready."""
    conditions = loop.node.core().read_node(node).status.conditions or []
    ready = next((c for c in conditions if c.type == "Ready"), None)
    return ready.last_transition_time.isoformat() if ready and ready.status != "True" else None


def one_death(loop: Loop, name: str, rng: random.Random) -> Outcome:
    """Train ``name``, kill its node between two checkpoints, follow it to the end; what it cost."""
    loop.apply(name, **JOB)
    first, second = f"{name}-train-a1-0", f"{name}-train-a2-0"
    node = wait_for(lambda: loop.running_on(first), JOB_TIMEOUT, f"{first} running", interval=0.2)
    at = EVERY * rng.randint(1, 3) + rng.randint(1, EVERY - 1)
    with StepLog.follow(loop.node, loop.namespace, first) as old:
        wait_for(lambda: old.last >= at, JOB_TIMEOUT, f"{first} at step {at}", interval=0.05)
        killed = datetime.now(UTC)
        with loop.node.node_down(node):
            not_ready = wait_for(lambda: not_ready_time(loop, node), 180, f"{node} not Ready", interval=0.5)
            phases = loop.follow(name)
    status = loop.job(name)["status"]
    if phases[-1] != "Succeeded":
        raise SystemExit(f"{name} ended {phases[-1]}:\n{loop.diagnose(name)}")
    restart = status.get("lastRestart") or {}
    steps = loop.logged_steps(second) if loop.pod_phase(second) else []
    return Outcome(
        killed_after=old.last,
        resumed_from=loop.resumed_from(second) if steps else None,
        not_ready=since(killed, not_ready),
        restarted=since(killed, restart.get("time")),
        running=since(killed, restart.get("resumedTime")),
        first_step=round((steps[0][0] - killed).total_seconds(), 1) if steps else None,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one repetition: a smoke run")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    reps = 1 if args.quick else args.reps
    rng = random.Random(args.seed)
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="prefops-bench-disruption-") as tmp:
        root = Path(tmp)
        (root / "cluster").mkdir()
        with node_cluster(root / "cluster") as cluster, open_loop(cluster, root) as loop:
            for rep in range(reps):
                name = f"bench-node-death-{rep}-{int(time.time())}"
                outcomes.append(one_death(loop, name, rng))
                print(f"rep {rep}: {outcomes[-1]}", file=sys.stderr)
                loop.kubectl("delete", "ptj", name, "--wait=false")
    print_results(outcomes)


def print_results(outcomes: list[Outcome]) -> None:
    print("\n### A node's death mid-training (the test cluster's defaults)\n")
    print("- node monitor grace period 40 s (kube-controller-manager), spec.nodeLostGraceSeconds 20")
    print(f"- one-node job of the tiny model, checkpointEverySteps {EVERY}; the node killed at a random step between")
    print("  two checkpoints; seconds from the kill, with the cluster's own timestamps\n")
    print("| rep | killed after step | resumed from | steps lost | node not Ready | group recreated | pod running "
          f"| first new step | goal <= {GOAL:.0f} s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for rep, o in enumerate(outcomes):
        cells = [o.killed_after, o.resumed_from, o.lost, o.not_ready, o.restarted, o.running, o.first_step]
        shown = " | ".join("-" if c is None else str(c) for c in cells)
        print(f"| {rep} | {shown} | {'met' if o.met else '**missed**'} |")
    firsts = [o.first_step for o in outcomes if o.first_step is not None]
    lost = [float(o.lost) for o in outcomes if o.lost is not None]
    misses = sum(not o.met for o in outcomes)
    if firsts and lost:
        print(f"\nfirst new step {spread(firsts, '{:.0f}')} s after the kill, median (min-max); steps lost per node "
              f"death {spread(lost, '{:.0f}')} (mean {statistics.mean(lost):.1f}); {misses} of {len(outcomes)} "
              "missed the goal")  # fmt: skip
    print(f"{len(outcomes)} repetitions; {machine()}")


if __name__ == "__main__":
    main()
