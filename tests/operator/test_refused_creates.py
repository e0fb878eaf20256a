"""Pods the real apiserver refuses (its ResourceQuota, ServiceAccount and Priority admission plugins): the job
never looks like it runs with no pods. A retry that can help (quota) shows a ReplicaFailure condition and a
Warning Event, backs off and carries on once there is room; one that cannot (a missing ServiceAccount or
PriorityClass the job names) fails the job naming the cause."""

from __future__ import annotations

import pytest
from support.jobs import job_manifest
from support.kube import wait_for

from prefops_operator.core.conditions import ConditionType, Reason

pytestmark = pytest.mark.integration
REFERENCE_FREE = {"algorithm": {"name": "simpo"}}


def test_a_pod_quota_holds_the_job_with_a_replica_failure_and_a_warning_until_there_is_room(
    jobs, kube_cluster, namespace, start_operator
):
    core = kube_cluster.core()
    core.create_namespaced_resource_quota(
        namespace, {"metadata": {"name": "two-pods"}, "spec": {"hard": {"pods": "2"}}}
    )
    wait_for(lambda: core.read_namespaced_resource_quota("two-pods", namespace).status.hard, 30, "the quota counted")
    start_operator()
    jobs.create(job_manifest("crowded", {**REFERENCE_FREE, "resources": {"nodes": 3}}))

    refused = wait_for(lambda: jobs.condition("crowded", ConditionType.REPLICA_FAILURE), 30, "a ReplicaFailure")
    assert (refused["status"], refused["reason"]) == ("True", Reason.QUOTA_EXCEEDED)
    replicas = {"crowded-train-a1-0", "crowded-train-a1-1", "crowded-train-a1-2"}
    created = set(jobs.pods("crowded"))  # a group's pods are created at once: any two of the three get in
    assert len(created) == 2 and created < replicas
    (left_out,) = replicas - created
    assert left_out in refused["message"] and "exceeded quota: two-pods" in refused["message"]
    assert jobs.status("crowded")["phase"] == "Training"
    jobs.wait_event("crowded", "Warning", Reason.QUOTA_EXCEEDED)

    core.patch_namespaced_resource_quota("two-pods", namespace, {"spec": {"hard": {"pods": "3"}}})
    jobs.wait_pods("crowded", "train", 3, timeout=60)  # the next retry, at most a backoff later
    status = jobs.wait_status(
        "crowded", lambda s: all(c["type"] != ConditionType.REPLICA_FAILURE for c in s["conditions"]), "cured"
    )
    assert (status["phase"], status["restarts"]) == ("Training", 0)


@pytest.mark.parametrize(
    ("resources", "reason", "cause"),
    [
        ({"serviceAccountName": "nobody"}, Reason.SERVICE_ACCOUNT_NOT_FOUND, 'serviceaccount "nobody" not found'),
        ({"priorityClassName": "no-such-priority"}, Reason.PRIORITY_CLASS_NOT_FOUND,
         "no PriorityClass with name no-such-priority was found"),
    ],
    ids=["service-account", "priority-class"],
)  # fmt: skip
def test_a_pod_refused_for_what_the_job_names_but_does_not_exist_fails_the_job_naming_it(
    jobs, namespace, start_operator, resources, reason, cause
):
    start_operator()
    jobs.create(job_manifest("misnamed", {**REFERENCE_FREE, "resources": resources}))
    status = jobs.wait_phase("misnamed", "Failed")
    failed = jobs.condition("misnamed", ConditionType.FAILED)
    assert failed["reason"] == reason and cause in failed["message"]
    assert status["restarts"] == 0
    jobs.wait_event("misnamed", "Warning", reason)
    assert not jobs.pods("misnamed")
