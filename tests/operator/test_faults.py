"""Faults, proven on the real apiserver with the kubelet stand-in moving pods: the operator SIGKILLed at random
moments across 20 job lifecycles, and the apiserver restarted under a running job. Every job still succeeds, no
group is restarted, every phase runs once, and no pod name is ever created twice (the apiserver's audit log says
which creates it answered 201)."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest
from support.fixtures import OPERATOR_USER
from support.jobs import job_manifest
from support.kube import wait_for

pytestmark = pytest.mark.integration
PHASES = ("precompute", "train", "export")
MISS = '{"cacheHit": false}'


def pod_creates(cluster, namespace, since):
    """Names of the pods the operator created in ``namespace``, once per create; and how many it deleted.

    A create answered 201 counts. So does one answered 5xx whose pod exists now while no other create of that name
    succeeded: the operator was killed mid-request, after the apiserver had stored the pod but before it could
    answer (the audit log then records a 500)."""
    refs = [(e, e.get("objectRef") or {}) for e in cluster.audit_events(OPERATOR_USER, since=since)]
    events = [(e, ref) for e, ref in refs if ref.get("resource") == "pods" and ref.get("namespace") == namespace]
    creates = [(ref["name"], e["responseStatus"]["code"]) for e, ref in events if e["verb"] == "create"]
    created = [name for name, code in creates if code == 201]
    present = {p.metadata.name for p in cluster.core().list_namespaced_pod(namespace).items}
    lost = {name for name, code in creates if code >= 500 and name in present and name not in created}
    return created + sorted(lost), sum(e["verb"] == "delete" for e, _ in events)


class StandIn:
    """One round of a kubelet for every pod of a namespace: a new pod starts, a running one exits 0."""

    def __init__(self, kubelet, core, namespace):
        self.kubelet, self.core, self.namespace = kubelet, core, namespace

    def step(self) -> None:
        for p in self.core.list_namespaced_pod(self.namespace).items:
            name, phase = p.metadata.name, (p.status.phase if p.status else None)
            if p.metadata.deletion_timestamp is not None or phase in ("Succeeded", "Failed"):
                continue
            if phase != "Running":
                self.kubelet.run(self.namespace, name)
            else:
                message = MISS if p.metadata.labels["prefops.dev/phase"] == "precompute" else ""
                self.kubelet.exit(self.namespace, name, 0, message=message)


def test_an_operator_killed_at_random_moments_over_20_job_lifecycles_repeats_and_loses_nothing(
    jobs, kubelet, namespace, kube_cluster, start_operator
):
    rng = random.Random(11)
    names = [f"chaos-{i:02d}" for i in range(20)]
    mark = kube_cluster.audit_mark()
    stand_in = StandIn(kubelet, kube_cluster.core(), namespace)
    state = {"operator": start_operator(), "kill_at": time.monotonic() + rng.uniform(0.2, 1.5), "kills": 0}
    waiting = list(names)

    def round_done() -> bool:
        if waiting and rng.random() < 0.25:  # jobs arrive over time: kills land at every moment of a lifecycle
            jobs.create(job_manifest(waiting.pop(0)))
        stand_in.step()
        if time.monotonic() >= state["kill_at"]:
            state["operator"].kill()  # SIGKILL: no cleanup
            state["operator"] = start_operator()
            state["kill_at"] = time.monotonic() + rng.uniform(0.2, 1.5)
            state["kills"] += 1
        return not waiting and all(jobs.status(n).get("phase") == "Succeeded" for n in names)

    wait_for(round_done, 300, "every job to succeed under SIGKILLs", interval=0.2)

    assert state["kills"] >= 10, state["kills"]
    print(f"{state['kills']} SIGKILLs over {len(names)} jobs")
    for name in names:
        status = jobs.status(name)
        assert status["restarts"] == 0, name
        assert set(status["phases"]) == set(PHASES), name
        assert all("completionTime" in status["phases"][p] for p in PHASES), name
    created, deleted = wait_for(lambda: (c := pod_creates(kube_cluster, namespace, mark)) and c[0] and c, 10, "audit")
    assert [n for n, count in Counter(created).items() if count > 1] == []  # no pod name created twice
    assert sorted(created) == sorted(f"{n}-{phase}-a1-0" for n in names for phase in PHASES)  # every phase once
    assert deleted == 0  # and no group torn down


def test_an_apiserver_restart_under_a_running_job_duplicates_no_work(
    jobs, kubelet, namespace, kube_cluster, start_operator
):
    mark = kube_cluster.audit_mark()
    start_operator()
    jobs.create(job_manifest("steady", {"resources": {"nodes": 2}}))
    kubelet.run_all(namespace, jobs.wait_pods("steady", "precompute", 1), exit_code=0)
    train = jobs.wait_pods("steady", "train", 2)
    kubelet.run_all(namespace, train)
    before = jobs.status("steady")

    kube_cluster.restart_apiserver()

    kubelet.run_all(namespace, train, exit_code=0)
    kubelet.run_all(namespace, jobs.wait_pods("steady", "export", 1, timeout=90), exit_code=0)
    status = jobs.wait_phase("steady", "Succeeded", timeout=90)
    assert status["restarts"] == 0
    assert status["phases"]["train"]["startTime"] == before["phases"]["train"]["startTime"]
    created, deleted = pod_creates(kube_cluster, namespace, mark)
    assert sorted(created) == ["steady-export-a1-0", "steady-precompute-a1-0", "steady-train-a1-0", "steady-train-a1-1"]
    assert deleted == 0
