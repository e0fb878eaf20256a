"""Parsing a job object at the edge: frozen values, errors naming the field. Pure, no server."""

from __future__ import annotations

import pytest
from support.jobs import job_manifest

from prefops_operator.core.spec import InvalidSpec, parse_job


def test_absent_blocks_take_the_crd_defaults():
    job = parse_job(job_manifest("j"))
    res = job.spec.resources
    assert (res.nodes, res.gpus_per_node, res.nproc_per_node) == (1, 1, 1)
    assert (job.spec.reference.workers, job.spec.backoff_limit, job.spec.startup_deadline_seconds) == (1, 3, 600)
    assert job.spec.suspend is False
    assert job.spec.ttl_seconds_after_finished is None


def test_processes_per_node_defaults_to_one_per_gpu():
    job = parse_job(job_manifest("j", {"resources": {"gpusPerNode": 8}}))
    assert job.spec.resources.nproc_per_node == 8
    job = parse_job(job_manifest("j", {"resources": {"gpusPerNode": 8, "processesPerNode": 2}}))
    assert job.spec.resources.nproc_per_node == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"resources": {"nodes": 0}}, "spec.resources.nodes: must be >= 1, got 0"),
        ({"resources": {"nodes": "two"}}, "spec.resources.nodes: must be an integer, got 'two'"),
        ({"suspend": "yes"}, "spec.suspend: must be true or false, got 'yes'"),
        ({"model": {"source": None}}, "spec.model.source: required field is missing"),
        ({"algorithm": {"lossType": "sigmoid"}}, "spec.algorithm.lossType: must be a list"),
        ({"resources": {"nodes": 513}}, "spec.resources.nodes: must be <= 512, got 513"),
        ({"resources": {"gpusPerNode": 17}}, "spec.resources.gpusPerNode: must be <= 16, got 17"),
        ({"reference": {"workers": 257}}, "spec.reference.workers: must be <= 256, got 257"),
        ({"rewardModel": {"source": "hf://o/rm", "trustRemoteCode": "yes"}}, "spec.rewardModel.trustRemoteCode"),
    ],
)
def test_structural_errors_name_the_field_path(spec, message):
    with pytest.raises(InvalidSpec, match=message.replace("(", r"\(")):
        parse_job(job_manifest("j", spec))


def test_a_missing_spec_block_is_named():
    manifest = job_manifest("j")
    del manifest["spec"]["storage"]
    with pytest.raises(InvalidSpec, match=r"^spec\.storage: required field is missing$"):
        parse_job(manifest)


def test_the_reward_model_trusts_remote_code_only_when_it_says_so_itself():
    spec = {"model": {"source": "hf://o/policy", "trustRemoteCode": True}, "rewardModel": {"source": "hf://o/rm"}}
    assert parse_job(job_manifest("j", spec)).spec.reward_model.trust_remote_code is False
    spec["rewardModel"]["trustRemoteCode"] = True
    assert parse_job(job_manifest("j", spec)).spec.reward_model.trust_remote_code is True
