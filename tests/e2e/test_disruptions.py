"""A cluster's bad day, on the two real nodes of ``make cluster NODES=2``: the node under a job dies
(``cluster.sh kill-node``: its kubelet, containerd and every process of its pods SIGKILLed, nothing removed from the
API) or is drained, and the job loses no work, never hangs, and goes on on the other node.

1. A one-node job whose node dies mid-training resumes on the other node from its last checkpoint and succeeds
   with ``backoffLimit: 0`` (a disruption, not a failure); its status names the lost node. The node restored
   comes back Ready with nothing of the old pod left on it, and no pod ever ran twice at once.
2. The same while the job precomputes, and while it exports.
3. ``kubectl drain`` of the node running the job: the trainer saves a checkpoint on SIGTERM, the job moves to the
   other node and loses at most one step.

Each test prints what it measured: the seconds from the kill (or the drain) to the first new training step, and the
steps lost. Every killed node is restored, and every drained node uncordoned, whatever happens, so the next test
finds two Ready, schedulable nodes. The jobs are short (the tiny model, one process, a checkpoint every 4 steps) and
``nodeLostGraceSeconds`` is 5 instead of 20: the node lifecycle controller's 40 s dominates the wait anyway.
"""

from __future__ import annotations

import collections
import re
from datetime import UTC, datetime

import pytest
from support.kube import wait_for
from support.loop import JOB_TIMEOUT, Loop, StepLog, timestamp

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

EVERY = 4  # checkpointEverySteps
#: a short one-node job: one precompute pod, one training process (no DeepSpeed), one export pod
QUICK = {
    "resources.nodes": 1,
    "reference.workers": 1,
    "training.deepspeed": None,
    "training.checkpointEverySteps": EVERY,
    "training.maxSteps": 24,
    "dataset.maxSamples": 96,
    "nodeLostGraceSeconds": 5,
    "backoffLimit": 0,
}
NOTICE_TIMEOUT = 180  # the node lifecycle controller's 40 s, the grace, and a slow shared machine


def now() -> datetime:
    return datetime.now(UTC)


def pods_of(loop: Loop, name: str, phase: str) -> list[str]:
    """The job's pods of a phase, in the order they were created."""
    return loop.pods.names(f"{name}-{phase}-")


def started(loop: Loop, pod: str) -> str:
    """Wait for ``pod`` to run; the node it runs on."""
    return wait_for(lambda: loop.running_on(pod), JOB_TIMEOUT, f"{pod} running", interval=0.2)


def disrupted(loop: Loop, name: str) -> dict:
    """Wait for the job's first disruption; its status then."""
    found = wait_for(lambda: loop.job(name)["status"].get("disruptions"), NOTICE_TIMEOUT, f"{name} disrupted", 0.5)
    assert found == 1, loop.diagnose(name)
    return loop.job(name)["status"]


def no_duplicates(loop: Loop, name: str) -> None:
    found = duplicates(loop, name)
    assert not found, f"pods of one replica running at once: {found}"


def duplicates(loop: Loop, name: str) -> dict[str, list[str]]:
    """Pods of one replica (phase and index) that have processes on some node at the same time, from the nodes'
    cgroups (the API still says Running for a pod of a dead node)."""
    uids = {p.uid: p.name for p in loop.pods.created if p.name.startswith(f"{name}-")}
    alive = [uids[u] for n in loop.node.nodes for u in loop.node.pod_processes(n) if u in uids]
    replicas = collections.defaultdict(list)
    for pod in alive:
        replicas[re.sub(r"-a\d+-", "-", pod)].append(pod)
    return {r: pods for r, pods in replicas.items() if len(pods) > 1}


def assert_one_disruption(loop: Loop, name: str, reason: str, pod: str, node: str) -> None:
    """One restart, charged to disruptionLimit, naming the pod and its node; the group recreated as attempt 2."""
    status = loop.job(name)["status"]
    counts = (status["restarts"], status["disruptions"], status["failures"])
    assert counts == (1, 1, 0), f"a disruption, not a failure: {loop.diagnose(name)}"
    restart = {k: status["lastRestart"].get(k) for k in ("kind", "reason", "pod", "node", "attempt")}
    assert restart == {"kind": "Disruption", "reason": reason, "pod": pod, "node": node, "attempt": 2}, status


def assert_restored_clean(loop: Loop, name: str, node: str, old: str) -> None:
    """The restored node is Ready, the old pod is gone from the API and from the node, nothing runs twice."""
    assert loop.node.node_ready(node) == "True"
    wait_for(lambda: old not in {p.metadata.name for p in loop.node.core().list_namespaced_pod(loop.namespace).items},
             90, f"{old} gone once {node} is back", interval=1)  # fmt: skip
    uid = next(p.uid for p in loop.pods.created if p.name == old)
    assert uid not in loop.node.pod_processes(node), f"nothing of {old} runs on {node}"
    no_duplicates(loop, name)


def first_new_step(loop: Loop, pod: str, since: datetime) -> tuple[int | None, int, float]:
    """Where ``pod`` resumed, its first step and the seconds from ``since`` to that step's log line."""
    resumed = loop.resumed_from(pod)
    when, step = loop.logged_steps(pod)[0]
    return resumed, step, (when - since).total_seconds()


def test_a_job_whose_node_dies_mid_training_resumes_on_the_other_node_and_the_node_comes_back_clean(loop):
    name = "lost-train"
    loop.apply(name, **QUICK)
    first, second = f"{name}-train-a1-0", f"{name}-train-a2-0"
    node = started(loop, first)
    with StepLog.follow(loop.node, loop.namespace, first) as old:
        wait_for(lambda: loop.checkpoints(name) and old.last % EVERY, JOB_TIMEOUT, "a checkpoint, then more steps", 0.3)
        killed = now()
        with loop.node.node_down(node):
            newest = max(loop.checkpoints(name))  # the pod is dead: nothing saves another one
            disrupted(loop, name)
    assert loop.follow(name, while_running=lambda _: no_duplicates(loop, name))[-1] == "Succeeded", loop.diagnose(name)
    assert_one_disruption(loop, name, "NodeLost", first, node)
    assert_restored_clean(loop, name, node, first)

    assert pods_of(loop, name, "train") == [first, second]
    assert loop.node.pod_node(loop.namespace, second) not in (None, node), "it resumed on the other node"
    resumed, step, seconds = first_new_step(loop, second, killed)
    assert resumed == newest, f"it resumed from checkpoint-{resumed}, its last was checkpoint-{newest}"
    lost = old.last - resumed
    assert step == resumed + 1 and 0 <= lost <= EVERY, (old.last, resumed)
    assert loop.manifest(name)["phases"]["train"]["resumedFrom"] == f"checkpoint-{resumed}"
    print(f"node {node} killed after step {old.last}: resumed from checkpoint-{resumed} on the other node, its "
          f"first new step {seconds:.0f} s after the kill; {lost} steps lost")  # fmt: skip


@pytest.mark.parametrize("phase", ["precompute", "export"])
def test_a_job_whose_node_dies_while_it_precomputes_or_exports_redoes_that_phase_on_the_other_node(loop, phase):
    name = f"lost-{phase}"
    loop.apply(name, **QUICK)
    pod = wait_for(lambda: pods_of(loop, name, phase), JOB_TIMEOUT, f"{name}'s {phase} pod", interval=0.2)[0]
    node = started(loop, pod)
    killed = now()
    with loop.node.node_down(node):
        disrupted(loop, name)
    assert loop.follow(name, while_running=lambda _: no_duplicates(loop, name))[-1] == "Succeeded", loop.diagnose(name)
    assert_one_disruption(loop, name, "NodeLost", pod, node)
    status = loop.job(name)["status"]
    assert_restored_clean(loop, name, node, pod)
    again = pods_of(loop, name, phase)
    assert len(again) == 2 and again[0] == pod, again
    assert loop.node.pod_node(loop.namespace, again[1]) not in (None, node), "it ran again on the other node"
    assert loop.manifest(name)["phases"]["train"].get("resumedFrom") is None, "training ran once, from the start"
    restart = status["lastRestart"]
    noticed = (timestamp(restart["time"]) - killed).total_seconds()
    running = (timestamp(restart["resumedTime"]) - killed).total_seconds() if "resumedTime" in restart else None
    print(f"node {node} killed during {phase}: the {phase} pod group recreated {noticed:.0f} s later, running again "
          f"after {running if running is None else round(running)} s")  # fmt: skip


def test_a_drained_node_s_job_saves_a_checkpoint_moves_to_the_other_node_and_loses_at_most_one_step(loop):
    name = "drained"
    loop.apply(name, **QUICK)
    first = f"{name}-train-a1-0"
    node = started(loop, first)
    with StepLog.follow(loop.node, loop.namespace, first) as old:
        wait_for(lambda: old.last > EVERY and old.last % EVERY, JOB_TIMEOUT, "steps past the first checkpoint")
        drained, at_drain = now(), old.last
        try:
            loop.node.kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=240s",
                              timeout=260)  # fmt: skip
            assert loop.follow(name)[-1] == "Succeeded", loop.diagnose(name)
        finally:
            loop.node.kubectl("uncordon", node)
    assert_one_disruption(loop, name, "Drained", first, node)
    second = f"{name}-train-a2-0"
    assert pods_of(loop, name, "train") == [first, second]
    assert loop.node.pod_node(loop.namespace, second) not in (None, node), "it moved to the other node"
    resumed, step, seconds = first_new_step(loop, second, drained)
    assert resumed is not None and resumed >= at_drain, f"a checkpoint saved on SIGTERM, after step {at_drain}"
    lost = old.last - resumed
    assert step == resumed + 1 and lost <= 1, (at_drain, old.last, resumed)
    print(f"node {node} drained at step {at_drain}: checkpoint-{resumed} saved on SIGTERM (last step logged "
          f"{old.last}), first new step on the other node {seconds:.0f} s after the drain; {lost} steps lost")  # fmt: skip
