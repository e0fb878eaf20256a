"""The CRD itself, as served by a real apiserver: it rejects bad specs with 422 naming the field (a URI with
credentials without repeating them), keeps unknown fields for the operator to name, defaults what the trainer
defaults, and documents every property."""

from __future__ import annotations

import json

import kubernetes
import pytest
import yaml
from support.jobs import job_manifest
from support.kube import ROOT, wait_for

from prefops_operator.core.spec import (
    DEFAULT_DISRUPTION_LIMIT,
    DEFAULT_NODE_LOST_GRACE_SECONDS,
    DEFAULT_PROGRESS_DEADLINE_SECONDS,
    DEFAULT_TERMINATION_GRACE_SECONDS,
    MAX_BACKOFF_LIMIT,
    MAX_DISRUPTION_LIMIT,
    MAX_GPUS_PER_NODE,
    MAX_GRACE_SECONDS,
    MAX_NODES,
    MAX_WORKERS,
)

CRD = ROOT / "crds" / "prefops.dev_preferencetrainingjobs.yaml"


def walk(schema, path="spec"):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from walk(schema[key], f"{path}[]")


def test_every_property_of_the_crd_has_a_description():
    schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    # metadata is the standard ObjectMeta: a CRD may only restrict its name, not describe it
    undocumented = [path for path, s in walk(schema, "") if path not in ("", ".metadata") and not s.get("description")]
    assert undocumented == []


BAD = [
    ({"training": {"deepspeed": {"stage": 4}}}, "spec.training.deepspeed.stage: Unsupported value: 4"),
    ({"resources": {"nodes": 0}}, "spec.resources.nodes: Invalid value: 0"),
    ({"algorithm": {"name": "ppo"}}, 'spec.algorithm.name: Unsupported value: "ppo"'),
    ({"algorithm": {"name": "dpo", "lossType": ["sigmod"]}}, 'spec.algorithm.lossType: Unsupported value: "sigmod"'),
    ({"algorithm": {"name": "dpo", "beta": 0}}, "spec.algorithm.beta: Invalid value: 0"),
    ({"model": {"source": "hf://a/b", "lora": {"dropout": 1.0}}}, "spec.model.lora.dropout: Invalid value: 1"),
    ({"training": {"learningRate": -1}}, "spec.training.learningRate: Invalid value: -1"),
    ({"resources": {"gpusPerNode": "eight"}}, 'spec.resources.gpusPerNode: Invalid value: "string"'),
    ({"backoffLimit": -1}, "spec.backoffLimit: Invalid value: -1"),
    ({"model": None}, "spec.model: Required value"),
    ({"resources": {"nodes": 513}}, "spec.resources.nodes in body should be less than or equal to 512"),
    ({"resources": {"gpusPerNode": 17}}, "spec.resources.gpusPerNode in body should be less than or equal to 16"),
    ({"reference": {"workers": 257}}, "spec.reference.workers in body should be less than or equal to 256"),
    ({"dataset": {"source": "s3://d/p", "maxLength": 10**6}}, "spec.dataset.maxLength in body should be less than"),
]


@pytest.mark.integration
@pytest.mark.parametrize(("spec", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_the_apiserver_rejects_specs_that_break_the_schema_with_422_naming_the_field(jobs, spec, message):
    with pytest.raises(kubernetes.client.ApiException) as caught:
        jobs.create(job_manifest("bad", spec))
    assert caught.value.status == 422
    assert message in json.loads(caught.value.body)["message"]


@pytest.mark.integration
@pytest.mark.parametrize("name", ["has.dots", "UPPER", "9starts-with-digit", "x" * 64])
def test_job_names_must_be_dns_labels_because_they_name_pods_and_services(jobs, name):
    with pytest.raises(kubernetes.client.ApiException) as caught:
        jobs.create(job_manifest(name))
    assert caught.value.status == 422
    assert "metadata.name" in json.loads(caught.value.body)["message"]


CREDENTIAL_URIS = [
    ("spec.storage.uri", {"storage": {"uri": "s3://AKIAEXAMPLE:wJalrXUtnFEMI@work/prefops"}}),
    ("spec.output.uri", {"output": {"uri": "s3://AKIAEXAMPLE:wJalrXUtnFEMI@models/out"}}),
    ("spec.model.source", {"model": {"source": "hf://someone:hf_wJalrXUtnFEMI@org/model"}}),
    ("spec.dataset.source", {"dataset": {"source": "s3://AKIAEXAMPLE:wJalrXUtnFEMI@prefs/p.jsonl"}}),
    ("spec.rewardModel.source", {"rewardModel": {"source": "hf://u:wJalrXUtnFEMI@org/rm"}}),
]


@pytest.mark.integration
@pytest.mark.parametrize(("field", "spec"), CREDENTIAL_URIS, ids=[f for f, _ in CREDENTIAL_URIS])
def test_the_apiserver_refuses_a_uri_with_credentials_naming_the_field_and_not_the_secret(jobs, field, spec):
    with pytest.raises(kubernetes.client.ApiException) as caught:
        jobs.create(job_manifest("leaky", spec))
    assert caught.value.status == 422
    assert f'"{field}" must not validate the schema' in json.loads(caught.value.body)["message"]
    assert "wJalrXUtnFEMI" not in caught.value.body


def test_every_object_of_the_spec_keeps_unknown_fields_so_none_disappears_silently():
    spec = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    objects = [path for path, s in walk(spec) if s.get("type") == "object" and "properties" in s]
    assert len(objects) >= 14
    assert [p for p, s in walk(spec) if "properties" in s and not s.get("x-kubernetes-preserve-unknown-fields")] == []


def test_the_crd_bounds_are_the_operators():
    spec = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    res, ref = spec["properties"]["resources"]["properties"], spec["properties"]["reference"]["properties"]
    assert (res["nodes"]["maximum"], res["gpusPerNode"]["maximum"], ref["workers"]["maximum"]) == (
        MAX_NODES,
        MAX_GPUS_PER_NODE,
        MAX_WORKERS,
    )
    top, training = spec["properties"], spec["properties"]["training"]["properties"]
    assert (top["backoffLimit"]["maximum"], top["disruptionLimit"]["maximum"]) == (
        MAX_BACKOFF_LIMIT,
        MAX_DISRUPTION_LIMIT,
    )
    assert (
        res["terminationGracePeriodSeconds"]["maximum"] == top["nodeLostGraceSeconds"]["maximum"] == MAX_GRACE_SECONDS
    )
    assert (
        top["disruptionLimit"]["default"],
        top["nodeLostGraceSeconds"]["default"],
        training["progressDeadlineSeconds"]["default"],
        res["terminationGracePeriodSeconds"]["default"],
    ) == (
        DEFAULT_DISRUPTION_LIMIT,
        DEFAULT_NODE_LOST_GRACE_SECONDS,
        DEFAULT_PROGRESS_DEADLINE_SECONDS,
        DEFAULT_TERMINATION_GRACE_SECONDS,
    )


@pytest.mark.integration
def test_absent_blocks_get_the_trainer_defaults_and_unknown_fields_are_kept_for_the_operator_to_name(jobs):
    manifest = job_manifest("defaults", {"training": {"epochz": 3}, "extra": {"x": 1}})
    spec = jobs.create(manifest)["spec"]
    assert spec["training"]["epochz"] == 3 and spec["extra"] == {"x": 1}  # not pruned: the operator names them
    assert spec["training"]["epochs"] == 1
    assert spec["resources"] == {
        "nodes": 1,
        "gpusPerNode": 1,
        "terminationGracePeriodSeconds": 300,
        "fitCheck": "enforce",
    }
    assert spec["reference"] == {"batchSize": 8, "workers": 1, "verifySamples": 8, "sharding": "auto"}
    assert (spec["suspend"], spec["backoffLimit"], spec["startupDeadlineSeconds"]) == (False, 3, 600)
    assert (spec["disruptionLimit"], spec["nodeLostGraceSeconds"]) == (10, 20)
    assert spec["training"]["progressDeadlineSeconds"] == 1800
    assert "lossType" not in spec["algorithm"] and "precompute" not in spec["reference"]  # depend on the algorithm


@pytest.mark.integration
def test_the_short_name_and_category_are_served(kube_cluster):
    resources = json.loads(kube_cluster.get("/apis/prefops.dev/v1alpha1"))["resources"]
    jobs = next(r for r in resources if r["name"] == "preferencetrainingjobs")
    assert jobs["shortNames"] == ["ptj"]
    assert jobs["categories"] == ["prefops"]
    sweeps = next(r for r in resources if r["name"] == "preferencetrainingsweeps")
    assert (sweeps["shortNames"], sweeps["categories"]) == (["ptsweep"], ["prefops"])
    assert {r["name"] for r in resources} == {
        "preferencetrainingjobs",
        "preferencetrainingjobs/status",
        "preferencetrainingsweeps",
        "preferencetrainingsweeps/status",
    }


@pytest.mark.integration
def test_the_apiserver_publishes_the_descriptions_for_kubectl_explain(kube_cluster):
    """OpenAPI v2 (all a 1.20 apiserver serves) carries no properties below an object that keeps unknown fields:
    so that kubectl's client-side validation leaves them to the operator. There, ``kubectl explain`` shows the spec
    block's own description and every status field; OpenAPI v3 (Kubernetes 1.27 and later) and
    docs/spec-reference.md show every spec field."""

    def published():
        doc = json.loads(kube_cluster.get("/openapi/v2"))
        return doc["definitions"].get("dev.prefops.v1alpha1.PreferenceTrainingJob")

    served = wait_for(published, 30, "the CRD in the OpenAPI document")
    ours = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    theirs = dict(walk(served, ""))
    described = [(p, s) for p, s in walk(ours, "") if p.startswith(".status") and s.get("description")]
    missing = [p for p, s in described if theirs.get(p, {}).get("description") != s["description"]]
    assert len(described) > 40
    assert missing == []
    assert theirs[".spec"]["description"] == ours["properties"]["spec"]["description"]
    assert theirs[".spec"]["x-kubernetes-preserve-unknown-fields"] is True
