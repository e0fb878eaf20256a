"""A sweep is the operator writing jobs on a user's behalf: what it echoes and what the apiserver refuses it, against
a real kube-apiserver with the operator running as its ServiceAccount. A credential written into an override's
value is never repeated (status, Events, the operator's log). A 403 to a trial job's create (a ResourceQuota here;
a webhook, RBAC or the owner-reference check alike) holds the sweep with a condition and one Warning Event, and is
retried with backoff, not hammered."""

from __future__ import annotations

import json

import pytest
from support.kube import wait_for
from support.sweeps import sweep_manifest

pytestmark = pytest.mark.integration
JOB_COUNT = "count/preferencetrainingjobs.prefops.dev"
REFERENCE_FREE = {"algorithm": {"name": "simpo"}}  # no trial waits for another's reference pass
SECRET = "wJalrXUtnFEMIEXAMPLESECRET"
KEY = "AKIAEXAMPLEKEY"


def test_a_credential_in_an_override_fails_the_sweep_without_being_echoed_anywhere(sweeps, start_operator):
    operator = start_operator()
    values = [f"s3://{KEY}:{SECRET}@bucket/m", f"s3:///{KEY}:{SECRET}@bucket/m", f"s3:/{KEY}:{SECRET}@bucket/m"]
    sweeps.create(sweep_manifest("leaky", {"parameters": [{"path": "model.source", "values": values}]}))

    status = sweeps.wait_phase("leaky", "Failed")
    failed = sweeps.condition("leaky", "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert "spec.parameters[0].values[2] (model.source=" in failed["message"]
    assert "must not carry credentials" in failed["message"]
    events = sweeps.events("leaky")
    assert ("Warning", "InvalidSpec") in [(t, r) for t, r, _ in events]
    echoed = json.dumps(status) + json.dumps(events) + operator.log.read_text()
    assert "InvalidSpec" in operator.log.read_text()
    assert SECRET not in echoed and KEY not in echoed


def count_quota(core, namespace: str, jobs: int) -> None:
    """A ResourceQuota of ``jobs`` PreferenceTrainingJobs in the namespace, waited for until its controller counted."""
    body = {"metadata": {"name": "jobs"}, "spec": {"hard": {JOB_COUNT: str(jobs)}}}
    try:
        core.create_namespaced_resource_quota(namespace, body)
    except Exception:  # there already: raise or lower it
        core.patch_namespaced_resource_quota("jobs", namespace, body)

    def counted() -> bool:
        status = core.read_namespaced_resource_quota("jobs", namespace).status
        return (status.hard or {}).get(JOB_COUNT) == str(jobs) and JOB_COUNT in (status.used or {})

    wait_for(counted, 60, f"the quota of {jobs} job(s) counted")


def test_a_job_quota_holds_the_sweep_with_a_replica_failure_and_one_warning_until_there_is_room(
    sweeps, jobs, kube_cluster, namespace, start_operator
):
    core = kube_cluster.core()
    count_quota(core, namespace, 0)
    start_operator()
    sweeps.create(sweep_manifest("quota", template=REFERENCE_FREE))  # three trials, two at a time, none waiting

    held = wait_for(lambda: sweeps.condition("quota", "ReplicaFailure"), 30, "a ReplicaFailure while Pending")
    assert (held["status"], held["reason"]) == ("True", "QuotaExceeded") and "exceeded quota: jobs" in held["message"]
    assert sweeps.status("quota")["phase"] == "Pending" and not jobs.exists("quota-0")

    count_quota(core, namespace, 1)  # room for one trial of the two that may run
    wait_for(lambda: jobs.exists("quota-0"), 60, "the first trial, at most a backoff later")
    status = sweeps.wait_status("quota", lambda s: s["phase"] == "Running", "running")
    held = wait_for(lambda: sweeps.condition("quota", "ReplicaFailure"), 30, "a ReplicaFailure while Running")
    assert held["reason"] == "QuotaExceeded" and not jobs.exists("quota-1")

    count_quota(core, namespace, 3)
    wait_for(lambda: jobs.exists("quota-1"), 90, "the second trial, at most a backoff later")
    status = sweeps.wait_status(
        "quota", lambda s: all(c["type"] != "ReplicaFailure" for c in s["conditions"]), "the condition gone"
    )
    assert status["phase"] == "Running"
    warnings = [r for t, r, _ in sweeps.events("quota") if t == "Warning"]
    assert warnings.count("QuotaExceeded") == 2  # once while Pending, once while Running: no Event per retry
