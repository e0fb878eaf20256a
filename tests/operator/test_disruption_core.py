"""The pure parts of failures and disruptions: node views, a pod's trouble, every restart's classification, the
backoff schedule, a started spec's frozen fields, and the state machine's decisions on them. No server."""

from __future__ import annotations

from dataclasses import replace

import pytest
from support.operator_core import at, make_job, pod

from prefops_operator.core.conditions import ConditionType, DisruptionReason, Reason, RestartKind
from prefops_operator.core.frozen import MUTABLE, effective_spec, spec_changes
from prefops_operator.core.health import is_abandoned, is_lost, trouble
from prefops_operator.core.machine import Observed, decide
from prefops_operator.core.naming import PodPhase
from prefops_operator.core.nodes import NodeView, node_view
from prefops_operator.core.restarts import RestartSettings, ended, removal_reason
from prefops_operator.core.status import Phase, Progress, Status
from prefops_operator.core.timefmt import format_time
from prefops_operator.runtime import NodeChanges, Runtime

TRAIN = PodPhase.TRAIN
SIMPO = {"algorithm": {"name": "simpo"}}


def node(name="n1", ready="True", since=None, reason="", taints=(), cordoned=False):
    condition = {"type": "Ready", "status": ready, "reason": reason, "lastTransitionTime": format_time(since or at(0))}
    return node_view({"metadata": {"name": name},
                      "spec": {"taints": list(taints), "unschedulable": cordoned},
                      "status": {"conditions": [condition]}})  # fmt: skip


def test_a_node_is_in_trouble_from_its_first_sign_ready_not_true_or_a_no_execute_trouble_taint():
    assert node().healthy and node(cordoned=True).healthy  # cordoned is not in trouble
    assert node(ready="Unknown", since=at(40), reason="NodeStatusUnknown").trouble_since == at(40)
    tainted = node(taints=[{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute",
                            "timeAdded": format_time(at(35))}])  # fmt: skip
    assert (tainted.trouble_since, tainted.trouble) == (at(35), "taint node.kubernetes.io/unreachable:NoExecute")
    not_ready = [{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute", "timeAdded": format_time(at(45))}]
    assert node(ready="False", since=at(50), taints=not_ready).trouble_since == at(45)  # the earliest sign
    # the NoSchedule taints the admission plugin puts on every new node carry no time: no trouble
    assert node(taints=[{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]).healthy
    assert node(cordoned=True).unschedulable


def test_a_node_whose_kubelet_came_back_is_healthy_while_the_controller_has_yet_to_lift_its_unreachable_taint():
    """The taint added while the kubelet was silent outlives its return by a monitor period; a pod scheduled there
    then (it tolerates the taint for 300 s) must not be lost at once for a taint from before it existed."""
    unreachable = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": format_time(at(45))}
    assert node(ready="True", since=at(60), taints=[unreachable]).healthy
    assert node(ready="True", since=at(45), taints=[unreachable]).trouble_since == at(45)  # not after the return
    assert node(ready="Unknown", since=at(40), taints=[unreachable]).trouble_since == at(40)


def test_a_pod_is_lost_once_its_trouble_lasted_the_grace_and_an_old_pod_is_abandoned_then_or_past_its_deletion():
    job = make_job()
    nodes = {"n1": NodeView("n1", "Unknown", at(100), "Ready=Unknown")}
    p = pod(job, TRAIN, 0, node="n1")
    assert trouble(p, nodes).since == at(100)
    assert not is_lost(p, nodes, 20, at(119)) and is_lost(p, nodes, 20, at(120))
    marked = pod(job, TRAIN, 0, node="n2", not_ready_since=at(7))
    assert trouble(marked, {}).what == "pod not ready on node n2"
    dying = pod(job, TRAIN, 0, node="n3", terminating=True, deleted=at(300))
    assert not is_abandoned(dying, {}, 20, at(329)) and is_abandoned(dying, {}, 20, at(330))


CASES = [  # (the pod, its node) -> (kind, reason)
    (dict(status="Failed", exit_code=1, reason="Error"), {}, (RestartKind.FAILURE, "Error")),
    (dict(status="Failed", exit_code=137, reason="OOMKilled"), {}, (RestartKind.FAILURE, "OOMKilled")),
    (dict(status="Failed", exit_code=None), {}, (RestartKind.FAILURE, "Failed")),
    (dict(status="Failed", exit_code=75), {}, (RestartKind.DISRUPTION, "Interrupted")),
    (dict(status="Failed", exit_code=75, terminating=True), {}, (RestartKind.DISRUPTION, "Deleted")),
    (dict(status="Failed", exit_code=143, terminating=True), {"cordoned": True}, (RestartKind.DISRUPTION, "Drained")),
    (dict(status="Failed", pod_reason="Evicted", pod_message="The node was low on resource: memory."), {},
     (RestartKind.DISRUPTION, "Evicted")),
    (dict(status="Failed", pod_reason="Evicted", pod_message='Usage of EmptyDir volume "cache" exceeds the limit'), {},
     (RestartKind.FAILURE, "Evicted")),
    (dict(status="Failed", pod_reason="Preempting"), {}, (RestartKind.DISRUPTION, "Preempted")),
    (dict(status="Failed", pod_reason="Terminated"), {}, (RestartKind.DISRUPTION, "Evicted")),
    (dict(status="Failed", exit_code=1, disruption="PreemptionByScheduler"), {}, (RestartKind.DISRUPTION, "Preempted")),
    (dict(status="Failed", exit_code=1, disruption="DeletionByPodGC"), {}, (RestartKind.DISRUPTION, "NodeLost")),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "on", "expected"), CASES)
def test_every_end_of_a_pod_is_a_failure_or_a_disruption_with_its_reason(fields, on, expected):
    p = pod(make_job(), TRAIN, 0, node="n1", **fields)
    nodes = {"n1": NodeView("n1", unschedulable=on.get("cordoned", False))}
    cause = ended(p, nodes)
    assert (cause.kind, cause.reason, cause.node) == (*expected, "n1")


@pytest.mark.parametrize(
    ("disruption", "view", "reason"),
    [
        (None, NodeView("n1"), DisruptionReason.DELETED),
        (None, NodeView("n1", unschedulable=True), DisruptionReason.DRAINED),
        ("EvictionByEvictionAPI", NodeView("n1"), DisruptionReason.EVICTED),
        ("EvictionByEvictionAPI", NodeView("n1", unschedulable=True), DisruptionReason.DRAINED),
        ("PreemptionByKubeScheduler", NodeView("n1", unschedulable=True), DisruptionReason.PREEMPTED),
        (None, NodeView("n1", "Unknown", at(0), "Ready=Unknown"), DisruptionReason.NODE_LOST),
    ],
)
def test_a_pod_deleted_while_it_runs_says_why_from_its_condition_and_its_node(disruption, view, reason):
    p = pod(make_job(), TRAIN, 0, node="n1", terminating=True, disruption=disruption)
    assert removal_reason(p, {"n1": view}) == reason


def test_the_backoff_doubles_from_10_s_to_6_min_as_the_job_controllers():
    settings = RestartSettings()
    assert [settings.backoff_after(n).total_seconds() for n in range(1, 9)] == [10, 20, 40, 80, 160, 320, 360, 360]
    assert RestartSettings(backoff=0).backoff_after(5).total_seconds() == 0


def test_only_the_lifecycle_fields_may_change_once_started_and_new_crd_defaults_are_no_change():
    started = make_job(spec={"resources": {"image": "a:1"}, "backoffLimit": 2}).spec.raw
    current = make_job(spec={"resources": {"image": "b:2", "terminationGracePeriodSeconds": 300},
                             "backoffLimit": 7, "suspend": True, "training": {"progressDeadlineSeconds": 60}}).spec.raw  # fmt: skip
    assert spec_changes(started, current) == ("spec.resources.image",)
    effective = effective_spec(started, current)
    assert effective["resources"]["image"] == "a:1"
    assert (effective["backoffLimit"], effective["suspend"], effective["training"]) == (
        7,
        True,
        {"progressDeadlineSeconds": 60},
    )
    assert spec_changes(started, {**current, "resources": {"image": "a:1", "terminationGracePeriodSeconds": 30}}) == (
        "spec.resources.terminationGracePeriodSeconds",
    )
    assert {"suspend", "backoffLimit", "disruptionLimit", "training.progressDeadlineSeconds"} <= set(MUTABLE)


def running(job, attempt=1, **status):
    base = Status(phase=Phase.TRAINING, start_time=at(0), attempt=attempt, group_running_time=at(1))
    return replace(base, **status)


def test_the_state_machine_restarts_a_group_whose_node_is_lost_only_after_the_grace_and_says_it_waits_meanwhile():
    job = make_job(spec={**SIMPO, "nodeLostGraceSeconds": 30})
    nodes = {"n1": NodeView("n1", "Unknown", at(100), "Ready=Unknown (NodeStatusUnknown)")}
    pods = (pod(job, TRAIN, 0, node="n1"),)
    before = decide(running(job), Observed(job, pods, nodes=nodes), at(129))
    waiting = before.status.condition(ConditionType.WAITING)
    assert (before.status.restarts, waiting.reason, before.wake_at) == (0, Reason.NODE_NOT_READY, at(130))
    assert [n.reason for n in before.notices] == [Reason.NODE_NOT_READY]
    after = decide(running(job), Observed(job, pods, nodes=nodes), at(130))
    restart = after.status.last_restart
    assert (restart.kind, restart.reason, restart.node, restart.not_before) == ("Disruption", "NodeLost", "n1", None)
    assert (after.status.attempt, after.status.disruptions, after.status.group_running_time) == (2, 1, None)


def test_a_vanished_pod_of_a_group_that_ran_is_a_disruption():
    job = make_job(spec={**SIMPO, "resources": {"nodes": 2}})
    decision = decide(running(job), Observed(job, (pod(job, TRAIN, 0),)), at(10))
    assert (decision.status.last_restart.reason, decision.status.last_restart.pod) == ("Deleted", "qwen-dpo-train-a1-1")


def test_a_recovered_group_is_told_with_the_seconds_it_took():
    job = make_job(spec=SIMPO)
    restarted = decide(running(job), Observed(job, (pod(job, TRAIN, 0, status="Failed", exit_code=75),)), at(10))
    pods = (pod(job, TRAIN, 0, attempt=2),)
    decision = decide(restarted.status, Observed(job, pods), at(52))
    assert (decision.recovered.resume_seconds, decision.status.group_running_time) == (42, at(52))
    (notice,) = decision.notices
    assert (notice.reason, notice.warning) == (Reason.RECOVERED, False)
    assert "runs in full again 42s after the restart (Disruption Interrupted" in notice.message


def test_the_progress_deadline_counts_from_the_first_scrape_of_the_attempt_and_each_new_step():
    job = make_job(spec={**SIMPO, "training": {"progressDeadlineSeconds": 100}})
    pods = (pod(job, TRAIN, 0),)
    status = running(job, progress=Progress(step=50, last_step_time=at(-500)))  # the previous attempt's
    first = decide(status, Observed(job, pods, progress=Progress(step=50)), at(10)).status
    assert first.progress.last_step_time == at(10)  # the same step, first read this attempt: the clock starts
    assert decide(first, Observed(job, pods), at(109)).status.restarts == 0
    assert decide(first, Observed(job, pods), at(109)).wake_at == at(110)
    stalled = decide(first, Observed(job, pods), at(110)).status
    assert (stalled.restarts, stalled.last_restart.reason) == (1, "ProgressDeadlineExceeded")
    never_read = running(job)  # no metrics read: no deadline
    assert decide(never_read, Observed(job, pods), at(10_000)).status.restarts == 0


def test_resuming_from_suspension_is_a_new_attempt():
    job = make_job(spec=SIMPO)
    suspended = Status(phase=Phase.SUSPENDED, attempt=3, restarts=2)
    resumed = decide(suspended, Observed(job), at(5)).status
    assert (resumed.phase, resumed.attempt, resumed.restarts) == (Phase.TRAINING, 4, 2)


def test_a_node_heartbeat_wakes_no_job_and_a_change_wakes_the_jobs_with_pods_on_it():
    job = make_job()
    woken: list = []

    class Queue:
        def add(self, key):
            woken.append(key)

    pods = {("a", "j1"): [pod(job, TRAIN, 0, node="n1")], ("a", "j2"): [pod(job, TRAIN, 0, node="n2")]}
    runtime = Runtime(reconcile=None, objects={}, children=pods, workers=1)
    runtime.queue = Queue()
    nodes = NodeChanges(runtime)
    healthy = NodeView("n1")
    nodes.changed(healthy, "n1")
    nodes.changed(healthy, "n1")  # a heartbeat: nothing new
    nodes.changed(NodeView("n1", "Unknown", at(1), "Ready=Unknown"), "n1")
    assert woken == [("a", "j1"), ("a", "j1")]
