"""Checks the CRD schema cannot express (Kubernetes 1.20 has no CEL): the operator runs them before a job starts
and fails the job at once with reason ``InvalidSpec`` and these messages, each naming its field.

The algorithm and gate checks are the trainer's own, shared (:mod:`.rules.checks`, generated from the trainer's
source); the storage checks are the cluster's (pods share no filesystem, so work and output storage must be object
storage).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from .algorithms import ALGORITHMS
from .known_fields import SPEC
from .rules.checks import GateFacts, JobFacts, job_problems
from .rules.schemes import SCHEMES, bucket_problem, hub_problem, split, unsupported
from .rules.userinfo import carries_userinfo
from .spec import JobSpec

GPU_RESOURCE = "nvidia.com/gpu"
# A Kubernetes resource quantity (k8s.io/apimachinery/pkg/api/resource), e.g. 16, 500m, 64Gi, 1.5, 1e3.
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?$")
#: a URI whose authority carries userinfo: scheme://<anything but '/'>@ (the CRD's URI fields refuse the same)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def is_quantity(value: str) -> bool:
    """Whether ``value`` is a Kubernetes resource quantity (16, 500m, 64Gi, ...)."""
    return bool(_QUANTITY.match(value))


def semantic_problems(spec: JobSpec) -> list[str]:
    """Every problem of ``spec`` the schema lets through, as ``field: message`` strings; empty when valid.

    A URI carrying credentials is reported alone, naming the field and never its value: the other messages quote
    values, and a problem's message lands in the job's status and Events."""
    credentials = credential_problems(spec.raw)
    if credentials:
        return credentials
    return [
        *unknown_fields(spec.raw),
        *job_problems(job_facts(spec), ALGORITHMS),
        *_storage_problems(spec),
        *_resource_problems(spec),
    ]


def unknown_fields(value: Any, known: Any = SPEC, path: str = "spec") -> list[str]:
    """``path.field: unknown field`` for every field of ``value`` the CRD does not declare (it keeps them instead
    of pruning them, so a typo is named rather than silently replaced by a default), with the nearest known name."""
    if isinstance(known, dict) and isinstance(value, Mapping):
        problems = []
        for key, sub in value.items():
            if key in known:
                problems += unknown_fields(sub, known[key], f"{path}.{key}")
                continue
            problems.append(f"{path}.{key}: unknown field{_hint(str(key), known)}")
        return problems
    if isinstance(known, list) and isinstance(value, list):
        return [p for i, item in enumerate(value) for p in unknown_fields(item, known[0], f"{path}[{i}]")]
    return []


def _hint(key: str, known: Mapping[str, Any]) -> str:
    """The nearest known name here, else where a field of that name does belong, else the names known here."""
    near = difflib.get_close_matches(key, list(known), n=1)
    if near:
        return f"; did you mean {near[0]!r}?"
    elsewhere = _paths_of(key, SPEC, "spec")
    if elsewhere:
        return f"; {key} belongs at {' or '.join(elsewhere)}"
    return f"; known here: {', '.join(known)}"


def _paths_of(key: str, tree: Any, path: str) -> list[str]:
    if isinstance(tree, list):
        return _paths_of(key, tree[0], f"{path}[]")
    if not isinstance(tree, dict):
        return []
    here = [f"{path}.{key}"] if key in tree else []
    return here + [p for k, sub in tree.items() for p in _paths_of(key, sub, f"{path}.{k}")]


def credential_problems(value: Any, path: str = "spec") -> list[str]:
    """``path: ...`` for every string under ``value`` that is a URI with credentials before its host
    (``s3://KEY:SECRET@bucket``, ``hf://user:token@org/model``); the message never repeats the value."""
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in credential_problems(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in credential_problems(v, f"{path}[{i}]")]
    if isinstance(value, str) and carries_userinfo(value):
        return [
            f"{path}: must not carry credentials (user:password@ or a token before '@' in the URI); give them "
            "through the Secret named by spec.storage.credentialsSecret"
        ]
    return []


def job_facts(spec: JobSpec) -> JobFacts:
    """What the shared checks (:mod:`.rules.checks`) read of ``spec``."""
    a, gate = spec.algorithm, spec.gate
    return JobFacts(
        algorithm=a.name,
        loss_type=a.loss_type,
        loss_weights=a.loss_weights,
        beta=a.beta,
        label_smoothing=a.label_smoothing,
        precompute=spec.reference.precompute,
        has_reward_model=spec.has_reward_model,
        has_generation=spec.has_generation,
        truncation_mode=spec.truncation_mode,
        eval_split=spec.eval_split,
        gate=None if gate is None else GateFacts(gate.metric, gate.minimum, gate.maximum),
        zero_stage=spec.zero_stage,
        has_lora=spec.has_lora,
    )


def _storage_problems(spec: JobSpec) -> list[str]:
    problems = [
        _s3_problem("spec.output.uri", spec.output_uri),
        _s3_problem("spec.storage.uri", spec.storage_uri),
        _source_problem("spec.model.source", spec.model_source),
        _source_problem("spec.dataset.source", spec.dataset_source),
    ]
    secret = spec.credentials_secret
    if secret is not None and (len(secret) > 253 or not _DNS_SUBDOMAIN.match(secret)):
        problems.append(f"spec.storage.credentialsSecret: {secret!r} is not a valid Secret name")
    return [p for p in problems if p]


def _s3_problem(field: str, uri: str) -> str | None:
    """Work storage and output on a cluster: a scheme every pod sees alike (``rules.schemes``: object storage)."""
    scheme, rest = split(uri)
    row = SCHEMES.get(scheme)
    if row is None or not row.shared:
        forms = " or ".join(f"an {r.form}" for r in SCHEMES.values() if r.shared)
        return (
            f"{field}: must be {forms} URI on a cluster (pods share no filesystem), got {uri!r}; "
            "local paths only work with prefops-trainer run"
        )
    problem = bucket_problem(scheme, rest, uri)
    return f"{field}: {problem}" if problem else None


def _source_problem(field: str, uri: str) -> str | None:
    scheme, rest = split(uri)
    row = SCHEMES.get(scheme)
    if row is None:
        return f"{field}: {unsupported(scheme, uri, list(SCHEMES.values()))}"
    if row.reach == "filesystem":
        return None  # a path inside the trainer image
    problem = (hub_problem if row.reach == "hub" else bucket_problem)(scheme, rest, uri)
    return f"{field}: {problem}" if problem else None


def _resource_problems(spec: JobSpec) -> list[str]:
    res = spec.resources
    problems = []
    for kind, quantities in (("requests", res.requests), ("limits", res.limits)):
        problems.extend(_quantity_problems(f"spec.resources.{kind}", quantities))
    if res.image is not None and not res.image.strip():
        problems.append("spec.resources.image: must not be empty; remove it to use the operator's default image")
    procs = res.processes_per_node
    if procs is not None and res.gpus_per_node > 0 and procs > res.gpus_per_node:
        problems.append(
            f"spec.resources.processesPerNode: {procs} processes for {res.gpus_per_node} GPUs per node; "
            "at most one process per GPU"
        )
    return problems


def _quantity_problems(field: str, quantities: Mapping[str, str]) -> list[str]:
    problems = []
    for name, value in quantities.items():
        if name == GPU_RESOURCE:
            problems.append(f"{field}.{name}: set GPUs with spec.resources.gpusPerNode, not here")
        elif not _QUANTITY.match(value):
            problems.append(f"{field}.{name}: {value!r} is not a Kubernetes quantity (e.g. 16, 500m, 64Gi)")
    return problems
