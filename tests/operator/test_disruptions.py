"""A cluster's bad day, exactly: dead nodes, deleted and evicted pods, drains, hung trainers and crash loops, each
against the real apiserver with the kubelet stand-in moving pods and nodes and a manual clock moving time
(``support.harness``: the operator's reconciler in this process, as its ServiceAccount).

Pods bound to a node are deleted gracefully here as on a real cluster: they stay Terminating until their kubelet
confirms (``kubelet.gone``), which a dead node never does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from support.fixtures import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE
from support.harness import Harness
from support.jobs import job_manifest
from support.kube import wait_for
from support.kubelet import Nodes
from support.trainer_metrics import TrainerMetricsServer

from prefops_operator.core.conditions import ConditionType, DisruptionReason, Reason, RestartKind
from prefops_operator.core.restarts import RestartSettings

pytestmark = pytest.mark.integration
SIMPO = {"algorithm": {"name": "simpo"}}


@pytest.fixture
def harness(kube_cluster, operator_kubeconfig, namespace):
    h = Harness(kube_cluster, operator_kubeconfig, namespace)
    yield h
    h.close()


@pytest.fixture
def nodes(kube_cluster, namespace):
    made = Nodes(kube_cluster.core())
    yield lambda *names: [made.create(f"{namespace}-{n}"[:63]) for n in names]
    made.delete_all()


@pytest.fixture
def node_stand_in(kube_cluster):
    return Nodes(kube_cluster.core())


def start(harness, jobs, name, spec, count=1, attempt=1):
    """Create the job, let the operator create its training group; the group's pod names."""
    jobs.create(job_manifest(name, {**SIMPO, **spec}))
    harness.settle(name)
    return sorted(jobs.wait_pods(name, "train", count, attempt=attempt, timeout=5))


def created(harness, jobs, name, count=1, attempt=2):
    harness.settle(name)
    return sorted(jobs.wait_pods(name, "train", count, attempt=attempt, timeout=5))


def condition(jobs, name, type_):
    return jobs.condition(name, type_)


def warnings(jobs, name):
    return [(reason, message) for kind, reason, message in jobs.events(name) if kind == "Warning"]


# -- a dead node -----------------------------------------------------------------------------------------------


def test_a_dead_node_restarts_the_group_on_a_healthy_one_after_the_grace_as_a_disruption_not_a_failure(
    harness, jobs, kubelet, nodes, node_stand_in, namespace
):
    n1, n2 = nodes("a", "b")
    (first,) = start(harness, jobs, "lost", {"backoffLimit": 0})
    kubelet.run(namespace, first, node=n1)
    harness.settle("lost")
    died = harness.clock.stamp()
    node_stand_in.ready(n1, "Unknown", died)  # the node lifecycle controller: the kubelet went silent

    harness.clock.advance(19)
    harness.settle("lost")
    waiting = condition(jobs, "lost", ConditionType.WAITING)
    assert (waiting["reason"], jobs.status("lost")["restarts"]) == (Reason.NODE_NOT_READY, 0)
    assert f"node {n1} Ready=Unknown" in waiting["message"] and harness.clock.stamp(1) in waiting["message"]
    assert (Reason.NODE_NOT_READY, waiting["message"]) in warnings(jobs, "lost")

    harness.clock.advance(1)  # nodeLostGraceSeconds (20) after the node stopped reporting
    (second,) = created(harness, jobs, "lost")
    status = jobs.status("lost")
    assert (status["phase"], status["restarts"], status["disruptions"], status["failures"]) == ("Training", 1, 1, 0)
    assert status["lastRestart"] | {"message": "-", "time": "-"} == {
        "kind": RestartKind.DISRUPTION, "reason": DisruptionReason.NODE_LOST, "attempt": 2, "pod": first, "node": n1,
        "message": "-", "time": "-",
    }  # fmt: skip
    assert "lastFailure" not in status
    disrupted = [m for r, m in warnings(jobs, "lost") if r == Reason.DISRUPTED]
    assert len(disrupted) == 1 and f"pod {first} on node {n1}: NodeLost" in disrupted[0]
    assert "disruption 1 of disruptionLimit 10; backoffLimit untouched" in disrupted[0]

    # the first pod never goes (its node is dead): it is named, and the job goes on without it
    pods = jobs.pods("lost", "train")
    assert pods[first].metadata.deletion_timestamp is not None and second == "lost-train-a2-0"
    stuck = condition(jobs, "lost", ConditionType.PODS_STUCK)
    assert stuck["reason"] == Reason.STUCK_TERMINATING
    assert f"pod {first} on node {n1} stays Terminating (node {n1} Ready=Unknown" in stuck["message"]
    assert (Reason.STUCK_TERMINATING, stuck["message"]) in warnings(jobs, "lost")

    kubelet.run(namespace, second, node=n2)
    harness.clock.advance(7)
    harness.settle("lost")
    status = jobs.status("lost")
    assert (status["lastRestart"]["resumeSeconds"], status["groupRunningTime"]) == (7, harness.clock.stamp())
    recovered = [m for k, r, m in jobs.events("lost") if r == Reason.RECOVERED]
    assert recovered == [f"the training pod group (attempt 2) runs in full again 7s after the restart "
                         f"(Disruption NodeLost: pod {first} on node {n1})"]  # fmt: skip
    metrics = harness.metrics()
    assert (f'prefops_operator_restarts_total{{kind="Disruption",node="{n1}",phase="Training",reason="NodeLost"}} 1.0'
            in metrics)  # fmt: skip
    assert 'prefops_operator_restart_recovery_seconds_sum{kind="Disruption",phase="Training"} 7.0' in metrics

    kubelet.exit(namespace, second, 0)
    harness.settle("lost")
    (export,) = jobs.wait_pods("lost", "export", 1, attempt=2, timeout=5)
    env = {e.name: e.value for e in jobs.pods("lost", "export")[export].spec.containers[0].env}
    assert env["PREFOPS_TRAINED_ATTEMPT"] == env["PREFOPS_ATTEMPT"] == "2"
    kubelet.run(namespace, export, node=n2)
    kubelet.exit(namespace, export, 0)
    harness.settle("lost")
    status = jobs.status("lost")
    assert (status["phase"], status["failures"], status["phases"]["train"]["attempt"]) == ("Succeeded", 0, 2)
    assert condition(jobs, "lost", ConditionType.PODS_STUCK) is not None  # still there, still named


@pytest.mark.parametrize("sign", ["unreachable taint", "pod not ready"])
def test_the_unreachable_taint_or_the_pods_ready_false_alone_is_a_lost_node_after_the_grace(
    harness, jobs, kubelet, nodes, node_stand_in, namespace, sign
):
    (n1,) = nodes("a")
    (first,) = start(harness, jobs, "signs", {"nodeLostGraceSeconds": 30})
    kubelet.run(namespace, first, node=n1)
    harness.settle("signs")
    if sign == "unreachable taint":
        node_stand_in.taint(n1, "node.kubernetes.io/unreachable", harness.clock.stamp())
    else:
        kubelet.not_ready(namespace, first, harness.clock.stamp())
    harness.clock.advance(29)
    harness.settle("signs")
    assert jobs.status("signs")["restarts"] == 0
    harness.clock.advance(1)
    created(harness, jobs, "signs")
    assert jobs.status("signs")["lastRestart"]["reason"] == DisruptionReason.NODE_LOST


def test_a_node_that_comes_back_within_the_grace_costs_nothing(harness, jobs, kubelet, nodes, node_stand_in, namespace):
    (n1,) = nodes("a")
    (first,) = start(harness, jobs, "flap", {})
    kubelet.run(namespace, first, node=n1)
    harness.settle("flap")
    node_stand_in.ready(n1, "Unknown", harness.clock.stamp())
    harness.clock.advance(15)
    harness.settle("flap")
    node_stand_in.ready(n1, "True", harness.clock.stamp())
    harness.clock.advance(60)
    harness.settle("flap")
    status = jobs.status("flap")
    assert (status["restarts"], status["attempt"]) == (0, 1)
    assert all(c["type"] != ConditionType.WAITING for c in status["conditions"])


# -- every classification --------------------------------------------------------------------------------------


def _deleted(kubelet, jobs, namespace, pod, node, node_stand_in):
    jobs.core.delete_namespaced_pod(pod, namespace)


def _drained(kubelet, jobs, namespace, pod, node, node_stand_in):
    node_stand_in.cordon(node)
    jobs.core.delete_namespaced_pod(pod, namespace)


def _preempted(kubelet, jobs, namespace, pod, node, node_stand_in):
    kubelet.disruption_target(namespace, pod, "PreemptionByScheduler")
    jobs.core.delete_namespaced_pod(pod, namespace)


def _evicted_by_api(kubelet, jobs, namespace, pod, node, node_stand_in):
    kubelet.disruption_target(namespace, pod, "EvictionByEvictionAPI")
    jobs.core.delete_namespaced_pod(pod, namespace)


def _interrupted(kubelet, jobs, namespace, pod, node, node_stand_in):
    kubelet.exit(namespace, pod, 75, message="interrupted: saved checkpoint-120; resume me")


def _node_pressure(kubelet, jobs, namespace, pod, node, node_stand_in):
    kubelet.evicted(namespace, pod, "The node was low on resource: memory. Container trainer was using 60Gi.")


def _own_storage(kubelet, jobs, namespace, pod, node, node_stand_in):
    kubelet.evicted(namespace, pod, 'Usage of EmptyDir volume "cache" exceeds the limit "200Gi".')


def _crash(kubelet, jobs, namespace, pod, node, node_stand_in):
    kubelet.exit(namespace, pod, 1, message="RuntimeError: boom")


def _oom(kubelet, jobs, namespace, pod, node, node_stand_in):
    kubelet.exit(namespace, pod, 137, reason="OOMKilled")


def _drained_and_saved(kubelet, jobs, namespace, pod, node, node_stand_in):
    node_stand_in.cordon(node)
    jobs.core.delete_namespaced_pod(pod, namespace)
    kubelet.exit(namespace, pod, 75)


CLASSIFICATIONS = [
    (_deleted, RestartKind.DISRUPTION, "Deleted"),
    (_drained, RestartKind.DISRUPTION, "Drained"),
    (_preempted, RestartKind.DISRUPTION, "Preempted"),
    (_evicted_by_api, RestartKind.DISRUPTION, "Evicted"),
    (_interrupted, RestartKind.DISRUPTION, "Interrupted"),
    (_node_pressure, RestartKind.DISRUPTION, "Evicted"),
    (_drained_and_saved, RestartKind.DISRUPTION, "Drained"),
    (_own_storage, RestartKind.FAILURE, "Evicted"),
    (_crash, RestartKind.FAILURE, "Error"),
    (_oom, RestartKind.FAILURE, "OOMKilled"),
]


@pytest.mark.parametrize(
    ("happen", "kind", "reason"), CLASSIFICATIONS, ids=[c[0].__name__[1:] for c in CLASSIFICATIONS]
)
def test_every_restart_is_classified_a_failure_or_a_disruption_with_its_reason_and_node(
    harness, jobs, kubelet, nodes, node_stand_in, namespace, happen, kind, reason
):
    (n1,) = nodes("a")
    (first,) = start(harness, jobs, "why", {"backoffLimit": 1, "disruptionLimit": 1})
    kubelet.run(namespace, first, node=n1)
    harness.settle("why")
    happen(kubelet, jobs, namespace, first, n1, node_stand_in)
    harness.settle("why")
    status = jobs.status("why")
    failure = kind == RestartKind.FAILURE
    assert (status["failures"], status["disruptions"], status["restarts"]) == (int(failure), int(not failure), 1)
    restart = status["lastRestart"]
    assert (restart["kind"], restart["reason"], restart["pod"], restart["node"]) == (kind, reason, first, n1)
    event = Reason.RESTARTING if failure else Reason.DISRUPTED
    assert [r for r, _ in warnings(jobs, "why") if r in (Reason.RESTARTING, Reason.DISRUPTED)] == [event]
    assert ("lastFailure" in status) == failure
    labels = f'kind="{kind}",node="{n1}",phase="Training",reason="{reason}"'
    assert f"prefops_operator_restarts_total{{{labels}}} 1.0" in harness.metrics()


# -- waiting for the previous group ----------------------------------------------------------------------------


def test_after_a_graceful_disruption_the_new_group_waits_for_the_old_one_to_save_and_a_stuck_one_at_most_its_grace(
    harness, jobs, kubelet, nodes, namespace
):
    (n1,) = nodes("a")
    (first,) = start(harness, jobs, "drain", {"resources": {"terminationGracePeriodSeconds": 60}})
    kubelet.run(namespace, first, node=n1)
    harness.settle("drain")
    jobs.core.delete_namespaced_pod(first, namespace)  # kubectl delete pod: SIGTERM, the trainer saves
    harness.settle("drain")
    status = jobs.status("drain")
    assert (status["disruptions"], status["attempt"]) == (1, 2)
    assert jobs.pods("drain", "train").keys() == {first}  # the new group waits for the checkpoint
    waiting = condition(jobs, "drain", ConditionType.WAITING)
    assert waiting["reason"] == Reason.PREVIOUS_ATTEMPT_TERMINATING and f"pod {first}" in waiting["message"]

    deleted = jobs.pods("drain", "train")[first].metadata.deletion_timestamp
    harness.clock.now = deleted.replace(microsecond=0)  # the kubelet should have killed it by now
    harness.clock.advance(29)
    harness.settle("drain")
    assert jobs.pods("drain", "train").keys() == {first}
    harness.clock.advance(1)  # 30 s past its deadline: stuck, no longer waited for
    assert created(harness, jobs, "drain") == ["drain-train-a2-0"]
    stuck = condition(jobs, "drain", ConditionType.PODS_STUCK)
    assert f"pod {first} on node {n1} stays Terminating (past its deletion at" in stuck["message"]
    kubelet.gone(namespace, first)
    harness.settle("drain")
    assert condition(jobs, "drain", ConditionType.PODS_STUCK) is None


def test_a_previous_pod_that_stops_in_time_lets_the_new_group_start_at_once(harness, jobs, kubelet, nodes, namespace):
    (n1,) = nodes("a")
    (first,) = start(harness, jobs, "saved", {})
    kubelet.run(namespace, first, node=n1)
    harness.settle("saved")
    jobs.core.delete_namespaced_pod(first, namespace)
    harness.settle("saved")
    kubelet.exit(namespace, first, 75)  # saved its checkpoint, "resume me"
    (second,) = created(harness, jobs, "saved")
    assert second == "saved-train-a2-0" and jobs.status("saved")["disruptions"] == 1
    assert condition(jobs, "saved", ConditionType.WAITING) is None


def test_a_rank_exit_while_a_peer_runs_is_judged_and_a_peer_on_a_failing_node_makes_it_a_disruption(
    harness, jobs, kubelet, nodes, node_stand_in, namespace
):
    n1, n2 = nodes("a", "b")
    ranks = start(harness, jobs, "peer", {"resources": {"nodes": 2}, "backoffLimit": 0}, count=2)
    kubelet.run(namespace, ranks[0], node=n1)
    kubelet.run(namespace, ranks[1], node=n2)
    harness.settle("peer")
    kubelet.exit(namespace, ranks[0], 1, message="gloo: connection reset by peer")  # rank 1's node just died
    harness.settle("peer")
    waiting = condition(jobs, "peer", ConditionType.WAITING)
    assert waiting["reason"] == Reason.JUDGING_EXIT and jobs.status("peer")["phase"] == "Training"
    harness.clock.advance(40)
    node_stand_in.ready(n2, "Unknown", harness.clock.stamp())  # the node lifecycle controller, 40 s later
    created(harness, jobs, "peer", count=2)
    status = jobs.status("peer")
    assert (status["phase"], status["failures"], status["disruptions"]) == ("Training", 0, 1)
    assert (status["lastRestart"]["reason"], status["lastRestart"]["node"]) == (DisruptionReason.NODE_LOST, n2)


def test_a_rank_exit_no_disruption_explains_is_a_failure_once_judged(harness, jobs, kubelet, nodes, namespace):
    n1, n2 = nodes("a", "b")
    ranks = start(harness, jobs, "judged", {"resources": {"nodes": 2}, "backoffLimit": 0}, count=2)
    kubelet.run(namespace, ranks[0], node=n1)
    kubelet.run(namespace, ranks[1], node=n2)
    harness.settle("judged")
    kubelet.exit(namespace, ranks[0], 1)
    finished = jobs.pods("judged", "train")[ranks[0]].status.container_statuses[0].state.terminated.finished_at
    harness.clock.now = finished.replace(microsecond=0)
    harness.clock.advance(59)
    harness.settle("judged")
    assert jobs.status("judged")["phase"] == "Training"
    harness.clock.advance(1)  # --exit-judging-seconds (60) after the exit
    harness.settle("judged")
    status = jobs.status("judged")
    assert (status["phase"], status["failures"]) == ("Failed", 0)
    assert condition(jobs, "judged", ConditionType.FAILED)["reason"] == Reason.BACKOFF_LIMIT_EXCEEDED


# -- limits, deadlines, backoff --------------------------------------------------------------------------------


def test_disruptions_are_bounded_by_the_disruption_limit(harness, jobs, kubelet, nodes, namespace):
    (n1,) = nodes("a")
    pod = start(harness, jobs, "limited", {"disruptionLimit": 1, "backoffLimit": 0})[0]
    for attempt in (2, 3):
        kubelet.run(namespace, pod, node=n1)
        kubelet.exit(namespace, pod, 75)
        harness.settle("limited")
        if attempt == 2:
            (pod,) = created(harness, jobs, "limited", attempt=2)
    status = jobs.status("limited")
    failed = condition(jobs, "limited", ConditionType.FAILED)
    assert (status["phase"], status["disruptions"], failed["reason"]) == ("Failed", 1, "DisruptionLimitExceeded")
    assert failed["message"].endswith("disruptionLimit (1 disruptions) exhausted")


def test_restarts_after_failures_back_off_as_the_job_controller_does_from_10_s_doubling_to_6_min(
    kube_cluster, operator_kubeconfig, jobs, kubelet, nodes, namespace
):
    harness = Harness(kube_cluster, operator_kubeconfig, namespace, RestartSettings())  # the defaults
    try:
        (n1,) = nodes("a")
        # the manual clock runs ahead of the apiserver's creation times: no startup deadline in the way
        (pod,) = start(harness, jobs, "crashy", {"backoffLimit": 8, "startupDeadlineSeconds": 86400})
        waits = []
        for attempt in range(2, 9):
            kubelet.run(namespace, pod, node=n1)
            kubelet.exit(namespace, pod, 1)
            harness.settle("crashy")
            restarted = harness.clock.now
            assert condition(jobs, "crashy", ConditionType.WAITING)["reason"] == Reason.BACKING_OFF
            not_before = datetime.fromisoformat(
                jobs.status("crashy")["lastRestart"]["notBefore"].replace("Z", "+00:00")
            )
            harness.clock.now = not_before - timedelta(seconds=1)
            harness.settle("crashy")
            assert not jobs.pods("crashy", "train").keys() - {pod}, "not a second before the backoff ends"
            harness.clock.now = not_before
            (pod,) = created(harness, jobs, "crashy", attempt=attempt)
            waits.append((not_before - restarted).total_seconds())
        assert waits == [10, 20, 40, 80, 160, 320, 360]
    finally:
        harness.close()


def test_a_pod_the_scheduler_cannot_place_says_why_and_until_when_then_fails_the_attempt(
    harness, jobs, kubelet, namespace
):
    (pod,) = start(harness, jobs, "nospace", {"startupDeadlineSeconds": 300, "backoffLimit": 0})
    kubelet.unschedulable(namespace, pod, "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")
    created_at = jobs.pods("nospace", "train")[pod].metadata.creation_timestamp.replace(microsecond=0)
    harness.clock.now = created_at
    harness.settle("nospace")
    waiting = condition(jobs, "nospace", ConditionType.WAITING)
    assert (waiting["reason"], waiting["message"]) == (
        Reason.UNSCHEDULABLE,
        f"pod {pod} cannot be scheduled: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu.; the attempt fails "
        f"at {harness.clock.stamp(300)} (startupDeadlineSeconds)",
    )
    assert (Reason.UNSCHEDULABLE, waiting["message"]) in warnings(jobs, "nospace")
    harness.clock.advance(299)
    harness.settle("nospace")
    assert jobs.status("nospace")["phase"] == "Training"
    harness.clock.advance(1)
    harness.settle("nospace")
    assert jobs.status("nospace")["lastFailure"]["reason"] == "StartupDeadlineExceeded"


def test_a_training_group_with_no_new_step_for_the_progress_deadline_restarts_and_the_event_says_so(
    kube_cluster, operator_kubeconfig, jobs, kubelet, nodes, namespace
):
    with TrainerMetricsServer() as trainer:
        harness = Harness(kube_cluster, operator_kubeconfig, namespace, metrics_port=trainer.port)
        try:
            (n1,) = nodes("a")
            spec = {"training": {"progressDeadlineSeconds": 600}}
            (pod,) = start(harness, jobs, "hung", spec)
            kubelet.run(namespace, pod, node=n1)
            for step in (10, 20, 30):  # a step every 500 s keeps it alive
                trainer.show("hung", namespace, "train", step=step, total_steps=100)
                harness.settle("hung")
                harness.clock.advance(500)
            harness.settle("hung")
            assert jobs.status("hung")["restarts"] == 0
            harness.clock.advance(99)  # 599 s without a new step
            harness.settle("hung")
            assert jobs.status("hung")["restarts"] == 0
            harness.clock.advance(1)
            harness.settle("hung")
            status = jobs.status("hung")
            assert (status["failures"], status["lastRestart"]["reason"]) == (1, "ProgressDeadlineExceeded")
            (message,) = [m for r, m in warnings(jobs, "hung") if r == Reason.RESTARTING]
            assert message.startswith(
                f"pod {pod} failed (ProgressDeadlineExceeded): no training step completed in 600s "
                "(spec.training.progressDeadlineSeconds): step 30 since"
            )
        finally:
            harness.close()


# -- spec edits ------------------------------------------------------------------------------------------------


def test_a_started_job_refuses_edits_but_of_its_lifecycle_fields_and_goes_on_with_the_spec_it_started_with(
    harness, jobs, kubelet, nodes, namespace
):
    (n1,) = nodes("a")
    spec = {"resources": {"image": "registry.example/trainer:v1"}, "backoffLimit": 2}
    (pod,) = start(harness, jobs, "frozen", spec)
    kubelet.run(namespace, pod, node=n1)
    jobs.patch_spec("frozen", {"output": {"uri": "s3://models/elsewhere"}, "resources": {"image": "evil:latest"},
                               "backoffLimit": 5})  # fmt: skip
    harness.settle("frozen")
    refused = condition(jobs, "frozen", ConditionType.SPEC_CHANGE_REFUSED)
    assert refused["reason"] == Reason.FIELD_IMMUTABLE
    assert refused["message"].startswith("spec.output.uri, spec.resources.image changed after the job started")
    assert (Reason.FIELD_IMMUTABLE, refused["message"]) in warnings(jobs, "frozen")

    kubelet.exit(namespace, pod, 1)  # the restart builds its pods from the spec the job started with
    harness.settle("frozen")
    harness.clock.advance(10)  # the backoff after a failure
    (pod,) = created(harness, jobs, "frozen")
    assert jobs.pods("frozen", "train")[pod].spec.containers[0].image == "registry.example/trainer:v1"
    assert "of backoffLimit 5" in next(m for r, m in warnings(jobs, "frozen") if r == Reason.RESTARTING)

    jobs.patch_spec("frozen", {"output": {"uri": "s3://models/frozen"}, "resources": {"image": None}})
    harness.settle("frozen")
    assert condition(jobs, "frozen", ConditionType.SPEC_CHANGE_REFUSED)["message"].startswith(
        "spec.resources.image changed"
    )
    jobs.patch_spec("frozen", {"resources": {"image": "registry.example/trainer:v1"}})
    harness.settle("frozen")
    assert condition(jobs, "frozen", ConditionType.SPEC_CHANGE_REFUSED) is None

    jobs.patch_spec("frozen", {"output": {"uri": "s3://models/elsewhere"}})
    kubelet.run(namespace, pod, node=n1)
    kubelet.exit(namespace, pod, 0)
    harness.settle("frozen")
    (export,) = jobs.wait_pods("frozen", "export", 1, attempt=2, timeout=5)
    kubelet.run(namespace, export, node=n1)
    kubelet.exit(namespace, export, 0)
    harness.settle("frozen")
    assert jobs.status("frozen")["outputURI"] == "s3://models/frozen"


def test_an_operator_restarted_after_the_job_started_reads_the_started_spec_back_from_its_config_map(
    kube_cluster, operator_kubeconfig, jobs, kubelet, nodes, namespace
):
    first = Harness(kube_cluster, operator_kubeconfig, namespace)
    try:
        start(first, jobs, "reread", {})
    finally:
        first.close()
    jobs.patch_spec("reread", {"model": {"source": "hf://org/other"}})
    second = Harness(kube_cluster, operator_kubeconfig, namespace)
    try:
        second.settle("reread")
    finally:
        second.close()
    config = kube_cluster.core().read_namespaced_config_map("reread-config", namespace).data["job.yaml"]
    assert "hf://Qwen/Qwen2.5-0.5B-Instruct" in config
    assert condition(jobs, "reread", ConditionType.SPEC_CHANGE_REFUSED)["message"].startswith("spec.model.source")


def test_the_operator_reads_nodes_with_its_own_service_account(kube_cluster, namespace):
    """The permission the node watch needs is the ClusterRole's (operator/rbac/operator.yaml)."""
    import kubernetes

    review = {"spec": {"resourceAttributes": {"verb": "watch", "resource": "nodes"},
                       "user": f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"}}  # fmt: skip
    answer = kubernetes.client.AuthorizationV1Api(kube_cluster.admin_client()).create_subject_access_review(review)
    assert answer.status.allowed, json.dumps(review)


# -- the operator process: the node watch ----------------------------------------------------------------------


def test_the_running_operator_hears_a_node_go_not_ready_from_the_node_watch_and_restarts_elsewhere(
    jobs, kubelet, nodes, node_stand_in, namespace, start_operator
):
    n1, n2 = nodes("a", "b")
    start_operator("--progress-interval", "3600")  # no periodic look: only the node's watch event can wake it
    jobs.create(job_manifest("watched", {**SIMPO, "nodeLostGraceSeconds": 5}))
    (first,) = jobs.wait_pods("watched", "train", 1)
    kubelet.run(namespace, first, node=n1)
    wait_for(lambda: jobs.status("watched").get("groupRunningTime"), 10, "the group running")
    silent_since = (datetime.now(UTC) - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    node_stand_in.ready(n1, "Unknown", silent_since)
    (second,) = jobs.wait_pods("watched", "train", 1, attempt=2, timeout=10)
    kubelet.run(namespace, second, node=n2)
    status = jobs.wait_status("watched", lambda s: "resumedTime" in s.get("lastRestart", {}), "the recovery", 10)
    assert (status["lastRestart"]["reason"], status["lastRestart"]["node"], status["failures"]) == ("NodeLost", n1, 0)
    assert jobs.pods("watched", "train")[first].metadata.deletion_timestamp is not None  # stuck on the dead node
