"""Planning the children for a status: what to create, delete, or wait for. Pure, no server."""

from __future__ import annotations

from dataclasses import replace

from support.operator_core import at, group, make_job, pod

from prefops_operator.core.children import ChildSettings
from prefops_operator.core.naming import PodPhase
from prefops_operator.core.plan import plan
from prefops_operator.core.status import Phase, Restart, Status

S = ChildSettings()
TRAIN, PRE = PodPhase.TRAIN, PodPhase.PRECOMPUTE


def names(new_pods):
    return [new.manifest["metadata"]["name"] for new in new_pods]


def test_a_training_phase_wants_config_service_and_one_pod_per_node():
    job = make_job(spec={"resources": {"nodes": 3}})
    p = plan(job, Status(phase=Phase.TRAINING), [], S, at(0))
    assert [c.manifest()["kind"] for c in p.ensure] == ["ConfigMap", "Service"]
    assert names(p.create_pods) == ["qwen-dpo-train-a1-0", "qwen-dpo-train-a1-1", "qwen-dpo-train-a1-2"]
    assert p.delete_pods == ()


def test_only_missing_replicas_are_created():
    job = make_job(spec={"resources": {"nodes": 3}})
    p = plan(job, Status(phase=Phase.TRAINING), [pod(job, TRAIN, 1)], S, at(0))
    assert names(p.create_pods) == ["qwen-dpo-train-a1-0", "qwen-dpo-train-a1-2"]


def restarted(kind: str, reason: str, not_before=None) -> Status:
    record = Restart(kind, reason, 2, "qwen-dpo-train-a1-1", "n1", "", at(0), not_before)
    return Status(phase=Phase.TRAINING, restarts=1, attempt=2, last_restart=record)


def test_after_a_graceful_disruption_the_new_group_waits_for_the_old_one_to_save_its_checkpoint_and_stop():
    job = make_job(spec={"resources": {"nodes": 2}})
    status = restarted("Disruption", "Deleted")
    old = group(job, TRAIN, 2, "Running", attempt=1)
    first = plan(job, status, old, S, at(0))
    assert first.delete_pods == ("qwen-dpo-train-a1-0", "qwen-dpo-train-a1-1")
    assert first.create_pods == ()
    assert first.waiting == ("qwen-dpo-train-a2-0", "qwen-dpo-train-a2-1")
    dying = [replace(p, terminating=True, deleted=at(300)) for p in old]
    assert plan(job, status, dying, S, at(1)).delete_pods == ()
    assert plan(job, status, dying, S, at(1)).create_pods == ()
    stopped = [replace(p, status="Failed", exit_code=75) for p in dying]  # saved, "resume me"
    for pods in ([], stopped):
        created = plan(job, status, pods, S, at(2)).create_pods
        assert {new.manifest["metadata"]["labels"]["prefops.dev/attempt"] for new in created} == {"2"}
        assert [(new.name, new.attempt) for new in created] == [("qwen-dpo-train-a2-0", 2), ("qwen-dpo-train-a2-1", 2)]


def test_a_pod_of_the_previous_group_stuck_past_its_grace_period_is_not_waited_for():
    job = make_job()
    status = restarted("Disruption", "Deleted")
    stuck = [pod(job, TRAIN, 0, attempt=1, terminating=True, deleted=at(300))]
    assert plan(job, status, stuck, S, at(329)).create_pods == ()
    assert names(plan(job, status, stuck, S, at(330)).create_pods) == ["qwen-dpo-train-a2-0"]


def test_after_a_lost_node_the_new_group_does_not_wait_for_the_old_one():
    job = make_job(spec={"resources": {"nodes": 2}})
    old = [replace(p, terminating=True, deleted=at(300)) for p in group(job, TRAIN, 2, "Running", attempt=1)]
    created = plan(job, restarted("Disruption", "NodeLost"), old, S, at(0)).create_pods
    assert names(created) == ["qwen-dpo-train-a2-0", "qwen-dpo-train-a2-1"]


def test_after_a_failure_the_new_group_waits_for_the_backoff_not_for_the_old_group():
    job = make_job()
    status = restarted("Failure", "Error", not_before=at(10))
    old = [pod(job, TRAIN, 0, attempt=1, terminating=True, deleted=at(300))]
    waiting = plan(job, status, old, S, at(9))
    assert (waiting.create_pods, waiting.waiting) == ((), ("qwen-dpo-train-a2-0",))
    assert names(plan(job, status, old, S, at(10)).create_pods) == ["qwen-dpo-train-a2-0"]


def test_once_the_group_ran_a_missing_replica_is_never_recreated_alone():
    job = make_job(spec={"resources": {"nodes": 2}})
    status = Status(phase=Phase.TRAINING, group_running_time=at(5))
    assert plan(job, status, [pod(job, TRAIN, 0)], S, at(10)).create_pods == ()


def test_finished_pods_of_earlier_phases_are_kept_for_their_logs():
    job = make_job()
    done = [pod(job, PRE, 0, "Succeeded")]
    assert plan(job, Status(phase=Phase.TRAINING), done, S, at(0)).delete_pods == ()


def test_suspending_deletes_every_pod_not_done():
    job = make_job(spec={"reference": {"workers": 2}})
    pods = [pod(job, PRE, 0, "Succeeded"), pod(job, PRE, 1, "Running")]
    p = plan(job, Status(phase=Phase.SUSPENDED), pods, S, at(0))
    assert p.delete_pods == ("qwen-dpo-precompute-a1-1",)
    assert p.create_pods == ()


def test_a_failed_job_stops_its_running_pods_and_keeps_the_failed_ones():
    job = make_job(spec={"resources": {"nodes": 2}})
    pods = [pod(job, TRAIN, 0, "Failed", exit_code=2), pod(job, TRAIN, 1, "Running")]
    p = plan(job, Status(phase=Phase.FAILED), pods, S, at(0))
    assert p.delete_pods == ("qwen-dpo-train-a1-1",)


def test_a_finished_job_is_deleted_once_its_ttl_has_passed():
    job = make_job(spec={"ttlSecondsAfterFinished": 30})
    done = Status(phase=Phase.SUCCEEDED, completion_time=at(0))
    assert not plan(job, done, [], S, at(29)).delete_job
    assert plan(job, done, [], S, at(30)).delete_job
    assert not plan(make_job(), done, [], S, at(10**6)).delete_job


def test_with_network_policies_every_running_phase_wants_the_jobs_policy():
    job = make_job()
    settings = ChildSettings(network_policy=True, metrics_from=("team=ml",))
    for phase, kinds in ((Phase.PRECOMPUTING, ["ConfigMap", "NetworkPolicy"]),
                         (Phase.TRAINING, ["ConfigMap", "NetworkPolicy", "Service"])):  # fmt: skip
        assert [c.manifest()["kind"] for c in plan(job, Status(phase=phase), [], settings, at(0)).ensure] == kinds
    assert [c.manifest()["kind"] for c in plan(job, Status(phase=Phase.EXPORTING), [], S, at(0)).ensure] == [
        "ConfigMap"
    ]


def test_a_child_made_once_is_known_by_the_kind_and_name_its_manifest_has():
    """The reconciler skips a child it made before by kind and name, without building its manifest: they must be the
    manifest's own, or a renamed child would never be created."""
    settings = ChildSettings(network_policy=True)
    children = plan(make_job(), Status(phase=Phase.TRAINING), [], settings, at(0)).ensure
    assert len(children) == 3
    for child in children:
        manifest = child.manifest()
        assert (child.kind, child.name) == (manifest["kind"], manifest["metadata"]["name"])
        assert child.key == f"{manifest['kind']}/{manifest['metadata']['name']}"
