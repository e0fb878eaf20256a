"""Labels say which job a pod claims to belong to, and anyone can set them; the operator counts only children
whose controller owner reference carries the job's uid. A job deleted and created again under the same name adopts
nothing of the old one, and a pod that merely carries a job's labels lends it no progress."""

from __future__ import annotations

import pytest
from support.jobs import job_manifest
from support.kube import wait_for

from prefops_operator.core.conditions import ConditionType, Reason

pytestmark = pytest.mark.integration
HIT, MISS = '{"cacheHit": true}', '{"cacheHit": false}'


def test_a_job_created_again_under_the_same_name_adopts_nothing_of_the_deleted_one(
    jobs, kubelet, namespace, kube_cluster, start_operator
):
    core = kube_cluster.core()
    start_operator()
    jobs.create(job_manifest("again"))  # DPO: precompute, train, export
    kubelet.run_all(namespace, jobs.wait_pods("again", "precompute", 1))
    kubelet.succeed(namespace, "again-precompute-a1-0", message=HIT)
    jobs.wait_pods("again", "train", 1)
    # deleted leaving its children behind (labelled as before, no owner reference), then created again
    jobs.delete("again", propagation="Orphan")
    wait_for(lambda: not jobs.exists("again"), 30, "the old job gone")
    uid = jobs.create(job_manifest("again"))["metadata"]["uid"]

    taken = wait_for(lambda: jobs.condition("again", ConditionType.REPLICA_FAILURE), 30, "the names reported taken")
    assert taken["reason"] == Reason.NAME_TAKEN
    assert "pod again-precompute-a1-0" in taken["message"] and "configmap again-config" in taken["message"]
    status = jobs.status("again")
    assert status["phase"] == "Precomputing" and "completionTime" not in status["phases"]["precompute"]

    for pod in ("again-precompute-a1-0", "again-train-a1-0"):  # the user clears what the old job left
        core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)
    core.delete_namespaced_config_map("again-config", namespace)
    core.delete_namespaced_service("again-train", namespace)
    pods = jobs.wait_pods("again", "precompute", 1, timeout=60)
    assert pods["again-precompute-a1-0"].metadata.owner_references[0].uid == uid
    kubelet.run(namespace, "again-precompute-a1-0")
    kubelet.succeed(namespace, "again-precompute-a1-0", message=MISS)
    status = jobs.wait_phase("again", "Training")
    assert status["phases"]["precompute"]["cacheHit"] is False  # its own precompute, not the old job's cache hit
    assert all(c["type"] != ConditionType.REPLICA_FAILURE for c in status["conditions"])
    config = core.read_namespaced_config_map("again-config", namespace)
    assert config.metadata.owner_references[0].uid == uid


def test_a_pod_that_only_carries_a_jobs_labels_lends_it_no_progress(
    jobs, kubelet, namespace, kube_cluster, start_operator
):
    start_operator()
    jobs.create(job_manifest("target"))
    jobs.wait_pods("target", "precompute", 1)
    labels = {"prefops.dev/job-name": "target", "prefops.dev/phase": "precompute", "prefops.dev/replica-index": "0",
              "prefops.dev/attempt": "1"}  # fmt: skip
    forged = {"metadata": {"name": "forged", "labels": labels},
              "spec": {"containers": [{"name": "trainer", "image": "attacker/anything"}]}}  # fmt: skip
    kube_cluster.core().create_namespaced_pod(namespace, forged)
    kubelet.run(namespace, "forged")
    kubelet.succeed(namespace, "forged", message=HIT)  # claims precompute done, from the cache

    kubelet.run(namespace, "target-precompute-a1-0")
    kubelet.succeed(namespace, "target-precompute-a1-0", message=MISS)
    status = jobs.wait_phase("target", "Training")
    assert status["phases"]["precompute"]["cacheHit"] is False
    assert kube_cluster.core().read_namespaced_pod("forged", namespace).metadata.deletion_timestamp is None  # not ours
