"""The CRD (crds/) and the trainer's parser (prefops_trainer.core.spec) describe the same job spec: the same fields
(camelCase aliases), types, defaults, enums, bounds and required fields, walked recursively through
``JobSpec.model_fields``. Where the schema and the parser express a rule differently (the CRD has an enum, the
trainer checks it in ``check_semantics``), :data:`DIFFERENT_MECHANISM` names it, and a test shows the parser
rejects what the CRD rejects."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types as at
import pytest
import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from prefops_trainer.core import spec as trainer_spec
from prefops_trainer.core.algorithms import ALGORITHM_NAMES, ALGORITHMS
from prefops_trainer.core.errors import SpecError
from prefops_trainer.core.uris import Uri

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "prefops.dev_preferencetrainingjobs.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
SPEC_SCHEMA = SCHEMA["properties"]["spec"]

#: The fields the trainer parses into a :class:`Uri` (a string in the CRD).
URI_FIELDS = ("spec.model.source", "spec.dataset.source", "spec.rewardModel.source", "spec.output.uri",
              "spec.storage.uri")  # fmt: skip

#: CRD path -> how the trainer enforces the same rule instead of a pydantic constraint.
DIFFERENT_MECHANISM = {
    "spec.algorithm.name": "enum in the CRD; trainer: check_semantics against ALGORITHM_NAMES",
    "spec.algorithm.lossType[]": "enum in the CRD (union of all algorithms); trainer: check_semantics per algorithm",
    "spec.algorithm.beta": "exclusiveMinimum 0 in the CRD; trainer: check_semantics 'must be > 0'",
    "spec.training.deepspeed.stage": "enum [2, 3] in the CRD; trainer: check_semantics 'must be 2 or 3'",
    "spec.resources.requests": "int-or-string quantities in the CRD; trainer: str | int | float",
    "spec.resources.limits": "int-or-string quantities in the CRD; trainer: str | int | float",
    "spec.resources.tolerations[]": "Pod toleration schema in the CRD; trainer: any mapping",
    **{
        path: "minLength 1 in the CRD; trainer: a typed Uri whose parser refuses an empty string" for path in URI_FIELDS
    },
}

#: CRD path -> what the trainer's parser still lacks. The operator side landed first (issue 11); the trainer side
#: follows. A field missing there is left out of the same-fields check; once the trainer declares it, its
#: comparison below is a strict xfail that fails when it passes, so the entry must then go.
AWAITING_TRAINER = {
    # no CRD default until the trainer knows the field: the apiserver would write it into every rewardModel, and
    # the trainer refuses fields it does not know; add `default: false` with the trainer side
    "spec.rewardModel.trustRemoteCode": "the reward model's own trustRemoteCode (default false)",
    "spec.resources.nodes": "upper bound 512",
    "spec.resources.gpusPerNode": "upper bound 16",
    "spec.reference.workers": "upper bound 256",
    "spec.dataset.maxLength": "upper bound 131072",
}


def _awaiting(path: str) -> Any:
    return pytest.mark.xfail(strict=True, reason=f"trainer side pending: {AWAITING_TRAINER[path]}")


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without ``| None``, whether it was optional)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            return args[0], optional
        return typing.Union[tuple(args)], optional  # noqa: UP007 - rebuilt from parts
    return annotation, False


def _crd_type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    if origin is typing.Literal:
        return {str: "string", int: "integer"}[type(typing.get_args(annotation)[0])]
    if origin in (tuple, list):
        return "array"
    if origin is dict:
        return "object"
    return {bool: "boolean", int: "integer", float: "number", str: "string", Uri: "string"}[annotation]


def _bounds(field: Any) -> dict[str, Any]:
    """The field's pydantic bounds in CRD (OpenAPI v3.0) vocabulary."""
    out: dict[str, Any] = {}
    for meta in field.metadata:
        if isinstance(meta, at.Ge):
            out["minimum"] = meta.ge
        elif isinstance(meta, at.Gt):
            out.update(minimum=meta.gt, exclusiveMinimum=True)
        elif isinstance(meta, at.Le):
            out["maximum"] = meta.le
        elif isinstance(meta, at.Lt):
            out.update(maximum=meta.lt, exclusiveMaximum=True)
        elif isinstance(meta, at.MinLen):
            out["min_len"] = meta.min_length
    return out


def _crd_bounds(prop: dict[str, Any]) -> dict[str, Any]:
    keys = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
    out = {k: prop[k] for k in keys if k in prop}
    if "minLength" in prop or "minItems" in prop:
        out["min_len"] = prop.get("minLength", prop.get("minItems"))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return {}  # a defaulted block: the CRD says default {} and defaults each field inside
    if isinstance(value, tuple):
        return list(value)
    return value


def walk(model: type[BaseModel], schema: dict[str, Any], path: str):
    """Yield (path, pydantic field or None, CRD property or None) for the union of both sides' fields."""
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    props = schema.get("properties", {})
    for key in sorted(fields.keys() | props.keys()):
        field, prop = fields.get(key), props.get(key)
        yield f"{path}.{key}", field, prop
        if field is None or prop is None:
            continue
        inner, _ = _unwrap(field.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            yield from walk(inner, prop, f"{path}.{key}")


PAIRS = list(walk(trainer_spec.JobSpec, SPEC_SCHEMA, "spec"))
BOTH = [x for x in PAIRS if x[1] is not None and x[2] is not None]
BOTH_PARAMS = [pytest.param(*x, id=x[0], marks=[_awaiting(x[0])] if x[0] in AWAITING_TRAINER else []) for x in BOTH]


def test_the_crd_and_the_trainer_have_the_same_fields():
    only_crd = [p for p, f, c in PAIRS if f is None and p not in AWAITING_TRAINER]
    only_trainer = [p for p, f, c in PAIRS if c is None]
    assert (only_crd, only_trainer) == ([], [])
    assert len(PAIRS) >= 70  # the walk reached every nested block


@pytest.mark.parametrize(("path", "field", "prop"), BOTH_PARAMS)
def test_each_field_has_the_same_type_default_enum_bounds_and_requiredness(path, field, prop):
    annotation, _ = _unwrap(field.annotation)
    assert prop["type"] == _crd_type(annotation), path
    if path not in DIFFERENT_MECHANISM:  # those are compared behaviourally below
        assert _crd_bounds(prop) == _bounds(field), path
        if typing.get_origin(annotation) is typing.Literal:
            assert prop["enum"] == list(typing.get_args(annotation)), path
        else:
            assert "enum" not in prop, path
    default = field.default
    if default is PydanticUndefined or default is None:
        assert "default" not in prop, f"{path}: the CRD defaults what the trainer leaves to the algorithm/absence"
    else:
        assert prop.get("default") == _plain(default), path
    parent = path.rsplit(".", 1)[0]
    required = _schema_at(parent).get("required", [])
    assert (path.rsplit(".", 1)[1] in required) == field.is_required(), path


def _schema_at(path: str) -> dict[str, Any]:
    node = SCHEMA
    for part in path.split("."):
        node = node["properties"][part]
    return node


def test_fields_left_to_the_algorithm_or_to_absence_say_what_absence_means():
    for path in (
        "spec.algorithm.lossType",
        "spec.algorithm.cpoAlpha",
        "spec.algorithm.alpha",
        "spec.reference.precompute",
    ):
        prop = _schema_at(path)
        assert "default" not in prop
        assert "Absent means" in prop["description"], path
    optional_scalars = [
        p for p, f, c in PAIRS if f and c and f.default is None and c["type"] != "object" and c["type"] != "array"
    ]
    assert [p for p in optional_scalars if "bsent" not in _schema_at(p)["description"]] == []


# -- rules expressed differently on the two sides: the parser rejects what the CRD rejects ----------------------

ITEM = {"metadata": {"name": "j"}, "apiVersion": "prefops.dev/v1alpha1", "kind": "PreferenceTrainingJob"}
BASE = {
    "model": {"source": "hf://a/b"},
    "dataset": {"source": "s3://b/p.jsonl"},
    "algorithm": {"name": "dpo"},
    "output": {"uri": "s3://o/m"},
    "storage": {"uri": "s3://w/x"},
}


def parse(**spec: Any) -> Any:
    return trainer_spec.parse_job({**ITEM, "spec": {**BASE, **spec}})


def test_algorithm_names_are_the_trainer_registry_and_others_are_rejected_by_both():
    assert _schema_at("spec.algorithm.name")["enum"] == list(ALGORITHM_NAMES)
    with pytest.raises(SpecError, match=r"spec\.algorithm\.name: unknown algorithm 'ppo'"):
        parse(algorithm={"name": "ppo"})


def test_the_loss_type_enum_is_every_loss_some_algorithm_accepts():
    union = sorted({t for a in ALGORITHMS.values() for t in a.loss_types})
    assert sorted(_schema_at("spec.algorithm.lossType")["items"]["enum"]) == union


def test_beta_must_be_positive_on_both_sides():
    assert (_schema_at("spec.algorithm.beta")["minimum"], _schema_at("spec.algorithm.beta")["exclusiveMinimum"]) == (
        0,
        True,
    )
    with pytest.raises(SpecError, match=r"spec\.algorithm\.beta: must be > 0"):
        parse(algorithm={"name": "dpo", "beta": 0})


def test_deepspeed_stage_is_2_or_3_on_both_sides():
    assert _schema_at("spec.training.deepspeed.stage")["enum"] == [2, 3]
    with pytest.raises(SpecError, match=r"spec\.training\.deepspeed\.stage: must be 2 or 3, got 1"):
        parse(training={"deepspeed": {"stage": 1}})
    assert parse(training={"deepspeed": {"stage": 3}}).spec.training.deepspeed.stage == 3


def test_uri_fields_are_the_crd_strings_of_at_least_one_character_and_empty_ones_are_rejected_by_both():
    assert sorted(p for p, f, c in BOTH if _unwrap(f.annotation)[0] is Uri) == sorted(URI_FIELDS)
    for path in URI_FIELDS:
        assert _schema_at(path)["minLength"] == 1, path
        block, key = path.split(".")[1:]
        field = {"uri": ""} if key == "uri" else {"source": ""}
        with pytest.raises(SpecError, match=re.escape(f"{path}: must not be empty")):
            parse(**{block: field})


def test_quantities_and_tolerations_the_crd_accepts_parse_in_the_trainer():
    job = parse(
        resources={
            "requests": {"cpu": "500m", "memory": "64Gi", "nvme": 2},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 30}
            ],
        }
    )
    assert job.spec.resources.requests == {"cpu": "500m", "memory": "64Gi", "nvme": 2}
    assert _schema_at("spec.resources.requests")["additionalProperties"]["x-kubernetes-int-or-string"] is True
    toleration = _schema_at("spec.resources.tolerations")["items"]["properties"]
    assert set(toleration) == {"key", "operator", "value", "effect", "tolerationSeconds"}


def test_job_names_are_limited_to_63_characters_on_both_sides():
    assert SCHEMA["properties"]["metadata"]["properties"]["name"]["maxLength"] == 63
    limits = [m.max_length for m in trainer_spec.Metadata.model_fields["name"].metadata if isinstance(m, at.MaxLen)]
    assert limits == [63]
