"""A create the apiserver refuses never leaves a job looking like it runs: why it was refused, whether a retry can
help, and what the status and Events say. Pure, no server (tests/operator/test_refused_creates.py runs the same
against the real apiserver's admission plugins)."""

from __future__ import annotations

import pytest
from support.operator_core import at, group, make_job, pod

from prefops_operator.core.children import ChildSettings
from prefops_operator.core.conditions import ConditionType, Reason
from prefops_operator.core.machine import Observed, decide
from prefops_operator.core.naming import PodPhase
from prefops_operator.core.plan import plan
from prefops_operator.core.pods import pod_view
from prefops_operator.core.refusals import MAX_BACKOFF, backoff, classify_refusal, name_taken
from prefops_operator.core.status import Phase, Status

QUOTA = 'pods "j-train-1" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1'
SA = 'pods "j-train-0" is forbidden: error looking up service account ns/{0}: serviceaccount "{0}" not found'
PRIORITY = 'pods "j-train-0" is forbidden: no PriorityClass with name urgent was found'
TRAINING = Status(phase=Phase.TRAINING, start_time=at(0))


@pytest.mark.parametrize(
    ("status", "message", "spec", "reason", "permanent"),
    [
        (422, "spec.tolerations[0].operator: Invalid value", {}, Reason.INVALID_SPEC, True),
        (403, QUOTA, {}, Reason.QUOTA_EXCEEDED, False),
        (403, 'pods "j" is forbidden: status unknown for quota: q, resources: pods', {}, Reason.QUOTA_EXCEEDED, False),
        (403, SA.format("trainer"), {"resources": {"serviceAccountName": "trainer"}}, Reason.SERVICE_ACCOUNT_NOT_FOUND,
         True),
        (403, SA.format("default"), {}, Reason.SERVICE_ACCOUNT_NOT_FOUND, False),
        (403, PRIORITY, {"resources": {"priorityClassName": "urgent"}}, Reason.PRIORITY_CLASS_NOT_FOUND, True),
        (403, 'pods is forbidden: User "x" cannot create resource "pods"', {}, Reason.CREATE_FORBIDDEN, False),
    ],
)  # fmt: skip
def test_each_refusal_is_named_and_only_user_mistakes_are_permanent(status, message, spec, reason, permanent):
    refusal = classify_refusal(status, message, make_job(spec=spec).spec)
    assert (refusal.reason, refusal.permanent, refusal.message) == (reason, permanent, message)


def test_a_refusal_a_retry_can_cure_keeps_the_phase_and_shows_a_replica_failure_with_one_warning():
    job = make_job(spec={"algorithm": {"name": "simpo"}, "resources": {"nodes": 2}})
    refusal = classify_refusal(403, QUOTA, job.spec)
    first = decide(TRAINING, Observed(job, [pod(job, PodPhase.TRAIN, 0)], refusal=refusal), at(1))
    condition = first.status.condition(ConditionType.REPLICA_FAILURE)
    assert first.status.phase == Phase.TRAINING and first.transitions == ()
    assert (condition.status, condition.reason, condition.message) == ("True", Reason.QUOTA_EXCEEDED, QUOTA)
    assert [(n.reason, n.message, n.warning) for n in first.notices] == [(Reason.QUOTA_EXCEEDED, QUOTA, True)]

    again = decide(first.status, Observed(job, [pod(job, PodPhase.TRAIN, 0)], refusal=refusal), at(5))
    assert again.notices == () and again.status == first.status  # retried: no new Event, nothing to write

    cured = decide(again.status, Observed(job, group(job, PodPhase.TRAIN, 2)), at(9))
    assert cured.status.condition(ConditionType.REPLICA_FAILURE) is None
    assert cured.status.phase == Phase.TRAINING


def test_a_refusal_no_retry_can_cure_fails_the_job_naming_the_cause():
    job = make_job(spec={"algorithm": {"name": "simpo"}, "resources": {"priorityClassName": "urgent"}})
    decision = decide(TRAINING, Observed(job, refusal=classify_refusal(403, PRIORITY, job.spec)), at(1))
    failed = decision.status.condition(ConditionType.FAILED)
    assert decision.status.phase == Phase.FAILED
    assert (failed.reason, failed.message) == (Reason.PRIORITY_CLASS_NOT_FOUND, PRIORITY)
    assert [(t.reason, t.warning) for t in decision.transitions] == [(Reason.PRIORITY_CLASS_NOT_FOUND, True)]
    assert decision.status.condition(ConditionType.REPLICA_FAILURE) is None


def test_retries_back_off_doubling_up_to_a_minute():
    assert [backoff(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, MAX_BACKOFF, MAX_BACKOFF]


# -- pods and objects the job does not control ---------------------------------------------------------------


def manifest(name: str, owner_uid: str | None, kind: str = "PreferenceTrainingJob") -> dict:
    refs = [{"apiVersion": "prefops.dev/v1alpha1", "kind": kind, "name": "j", "uid": owner_uid, "controller": True}]
    labels = {"prefops.dev/job-name": "qwen-dpo", "prefops.dev/phase": "train", "prefops.dev/replica-index": "0"}
    return {"metadata": {"name": name, "labels": labels, "ownerReferences": refs if owner_uid else []}}


def test_a_pods_owner_is_the_uid_of_the_job_in_its_controller_reference_and_nothing_else():
    assert pod_view(manifest("a", "uid-1234")).owner == "uid-1234"
    assert pod_view(manifest("b", None)).owner is None  # labels alone claim nothing
    assert pod_view(manifest("c", "uid-9", kind="ReplicaSet")).owner is None


def test_a_name_held_by_a_pod_the_job_does_not_control_is_waited_for_never_deleted_or_adopted():
    job = make_job(spec={"resources": {"nodes": 2}})
    stranger = pod(job, PodPhase.TRAIN, 0, "Succeeded", owner="uid-of-a-deleted-job")
    p = plan(job, TRAINING, [], ChildSettings(), at(0), foreign=[stranger])
    assert [n.name for n in p.create_pods] == ["qwen-dpo-train-a1-1"]
    assert p.blocked == ("qwen-dpo-train-a1-0",)
    assert p.delete_pods == ()
    refusal = name_taken([f"pod {n}" for n in p.blocked])
    assert (refusal.reason, refusal.permanent) == (Reason.NAME_TAKEN, False)
    assert "pod qwen-dpo-train-a1-0" in refusal.message
