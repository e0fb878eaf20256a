"""A ``PreferenceTrainingJob`` as the operator sees it: parsed once, at the edge, into frozen objects.

The apiserver has already checked the CRD schema and applied its defaults; this parser still checks every field
it reads (an object stored before a schema change, a hand-edited status) and raises :class:`InvalidSpec` naming
the field path. The operator reads only what it acts on; the whole ``spec`` travels untouched to the trainer
(``JobSpec.raw``), whose own parser reads the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .rules.errors import InvalidSpec as InvalidSpec
from .timefmt import parse_time

API_VERSION = "prefops.dev/v1alpha1"
KIND = "PreferenceTrainingJob"
#: upper bounds the CRD sets too (tests/operator/test_crd_schema.py checks both agree)
MAX_NODES, MAX_GPUS_PER_NODE, MAX_WORKERS = 512, 16, 256
MAX_BACKOFF_LIMIT, MAX_DISRUPTION_LIMIT = 100, 1000
MAX_GRACE_SECONDS = 86400
#: defaults the CRD sets too
DEFAULT_DISRUPTION_LIMIT = 10
DEFAULT_NODE_LOST_GRACE_SECONDS = 20  # after the node lifecycle controller's own 40 s (node-monitor-grace-period)
DEFAULT_PROGRESS_DEADLINE_SECONDS = 1800
DEFAULT_TERMINATION_GRACE_SECONDS = 300  # time to save a checkpoint at the next step and upload it


@dataclass(frozen=True)
class Algorithm:
    name: str
    loss_type: tuple[str, ...] | None
    loss_weights: tuple[float, ...] | None
    beta: float
    label_smoothing: float


@dataclass(frozen=True)
class Gate:
    """``spec.output.gate``: publish the model only if the final evaluation's ``metric`` is at least ``minimum`` or
    at most ``maximum`` (exactly one is set; docs/contract.md §8)."""

    metric: str
    minimum: float | None
    maximum: float | None


@dataclass(frozen=True)
class RewardModel:
    source: str
    trust_remote_code: bool


@dataclass(frozen=True)
class Reference:
    precompute: bool | None
    workers: int


@dataclass(frozen=True)
class Resources:
    image: str | None
    nodes: int
    gpus_per_node: int
    processes_per_node: int | None
    requests: Mapping[str, str]
    limits: Mapping[str, str]
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]
    priority_class_name: str | None
    scheduler_name: str | None
    queue_name: str | None
    service_account_name: str | None
    termination_grace_period_seconds: int = DEFAULT_TERMINATION_GRACE_SECONDS

    @property
    def nproc_per_node(self) -> int:
        """Processes torchrun starts per pod: ``processesPerNode``, else one per GPU, else one."""
        return self.processes_per_node or max(self.gpus_per_node, 1)


@dataclass(frozen=True)
class JobSpec:
    model_source: str
    dataset_source: str
    algorithm: Algorithm
    reference: Reference
    resources: Resources
    output_uri: str
    storage_uri: str
    credentials_secret: str | None
    suspend: bool
    backoff_limit: int
    active_deadline_seconds: int | None
    startup_deadline_seconds: int
    ttl_seconds_after_finished: int | None
    truncation_mode: str
    reward_model: RewardModel | None
    has_generation: bool
    raw: Mapping[str, Any]
    eval_split: str | None = None
    gate: Gate | None = None
    disruption_limit: int = DEFAULT_DISRUPTION_LIMIT
    node_lost_grace_seconds: int = DEFAULT_NODE_LOST_GRACE_SECONDS
    progress_deadline_seconds: int = DEFAULT_PROGRESS_DEADLINE_SECONDS
    #: ``spec.training.deepspeed.stage``; None without DeepSpeed
    zero_stage: int | None = None
    #: whether ``spec.model.lora`` is set (else full fine-tuning)
    has_lora: bool = False

    @property
    def has_reward_model(self) -> bool:
        return self.reward_model is not None


@dataclass(frozen=True)
class JobMeta:
    namespace: str
    name: str
    uid: str
    generation: int
    resource_version: str
    created: datetime | None


@dataclass(frozen=True)
class Job:
    meta: JobMeta
    spec: JobSpec

    @property
    def key(self) -> tuple[str, str]:
        return (self.meta.namespace, self.meta.name)


class _Fields:
    """Typed reads from one mapping of the manifest; every error names ``path.key``."""

    def __init__(self, data: Any, path: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise InvalidSpec(f"{path}: must be an object, got {type(data).__name__}")
        self.data, self.path = data, path

    def _get(self, key: str, default: Any, required: bool) -> Any:
        value = self.data.get(key)
        if value is None:
            if required:
                raise InvalidSpec(f"{self.path}.{key}: required field is missing")
            return default
        return value

    def _fail(self, key: str, expected: str, value: Any) -> InvalidSpec:
        return InvalidSpec(f"{self.path}.{key}: must be {expected}, got {value!r}")

    def obj(self, key: str, required: bool = False) -> _Fields:
        return _Fields(self._get(key, {}, required), f"{self.path}.{key}")

    def str_(self, key: str, default: str | None = None, required: bool = False) -> Any:
        value = self._get(key, default, required)
        if value is not None and (not isinstance(value, str) or (required and not value)):
            raise self._fail(key, "a non-empty string", value)
        return value

    def int_(self, key: str, default: int | None = None, minimum: int | None = None, maximum: int | None = None) -> Any:
        value = self._get(key, default, False)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, "an integer", value)
        if minimum is not None and value < minimum:
            raise self._fail(key, f">= {minimum}", value)
        if maximum is not None and value > maximum:
            raise self._fail(key, f"<= {maximum}", value)
        return value

    def float_(self, key: str, default: float) -> float:
        value = self._get(key, default, False)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(key, "a number", value)
        return float(value)

    def bool_(self, key: str, default: bool | None = None) -> Any:
        value = self._get(key, default, False)
        if value is not None and not isinstance(value, bool):
            raise self._fail(key, "true or false", value)
        return value

    def list_(self, key: str, kind: type | tuple[type, ...]) -> tuple[Any, ...] | None:
        value = self._get(key, None, False)
        if value is None:
            return None
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, kind) for v in value):
            raise self._fail(key, "a list", value)
        return tuple(value)

    def str_map(self, key: str) -> dict[str, str]:
        value = self._get(key, {}, False)
        if not isinstance(value, Mapping) or any(
            isinstance(v, bool) or not isinstance(v, str | int | float) for v in value.values()
        ):
            raise self._fail(key, "a map of strings", value)
        return {str(k): str(v) for k, v in value.items()}


_KEPT_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "creationTimestamp", "deletionTimestamp")


def slim_job(body: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a job object the operator reads (no managedFields, annotations or labels): what it keeps in
    memory per job."""
    meta = body.get("metadata") or {}
    return {
        "metadata": {k: meta[k] for k in _KEPT_METADATA if k in meta},
        "spec": body.get("spec"),
        "status": body.get("status"),
    }


def parse_job(body: Mapping[str, Any]) -> Job:
    """Parse a job object (as served by the apiserver) into a :class:`Job`; raise :class:`InvalidSpec`."""
    meta = body.get("metadata") or {}
    return Job(meta=parse_meta(meta), spec=parse_spec(body.get("spec")))


def parse_meta(meta: Mapping[str, Any]) -> JobMeta:
    return JobMeta(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        resource_version=str(meta.get("resourceVersion") or ""),
        created=parse_time(meta.get("creationTimestamp")),
    )


def parse_spec(spec: Any) -> JobSpec:
    f = _Fields(spec, "spec")
    model, dataset, algo = f.obj("model", required=True), f.obj("dataset", required=True), f.obj("algorithm", True)
    ref, res, training = f.obj("reference"), f.obj("resources"), f.obj("training")
    output, storage = f.obj("output", required=True), f.obj("storage", required=True)
    weights = algo.list_("lossWeights", (int, float))
    return JobSpec(
        model_source=model.str_("source", required=True),
        dataset_source=dataset.str_("source", required=True),
        algorithm=Algorithm(
            name=algo.str_("name", required=True),
            loss_type=algo.list_("lossType", str),
            loss_weights=None if weights is None else tuple(float(w) for w in weights),
            beta=algo.float_("beta", 0.1),
            label_smoothing=algo.float_("labelSmoothing", 0.0),
        ),
        reference=Reference(
            precompute=ref.bool_("precompute"), workers=ref.int_("workers", 1, minimum=1, maximum=MAX_WORKERS)
        ),
        resources=_parse_resources(res),
        output_uri=output.str_("uri", required=True),
        storage_uri=storage.str_("uri", required=True),
        credentials_secret=storage.str_("credentialsSecret"),
        suspend=f.bool_("suspend", False),
        backoff_limit=f.int_("backoffLimit", 3, minimum=0, maximum=MAX_BACKOFF_LIMIT),
        active_deadline_seconds=f.int_("activeDeadlineSeconds", None, minimum=1),
        startup_deadline_seconds=f.int_("startupDeadlineSeconds", 600, minimum=1),
        ttl_seconds_after_finished=f.int_("ttlSecondsAfterFinished", None, minimum=0),
        truncation_mode=dataset.str_("truncationMode", "keep_start"),
        reward_model=_parse_reward_model(f),
        has_generation=f.data.get("generation") is not None,
        raw=dict(spec),
        eval_split=dataset.str_("evalSplit"),
        gate=_parse_gate(output),
        disruption_limit=f.int_("disruptionLimit", DEFAULT_DISRUPTION_LIMIT, minimum=0, maximum=MAX_DISRUPTION_LIMIT),
        node_lost_grace_seconds=f.int_(
            "nodeLostGraceSeconds", DEFAULT_NODE_LOST_GRACE_SECONDS, minimum=0, maximum=MAX_GRACE_SECONDS
        ),
        progress_deadline_seconds=training.int_(
            "progressDeadlineSeconds", DEFAULT_PROGRESS_DEADLINE_SECONDS, minimum=1
        ),
        zero_stage=training.obj("deepspeed").int_("stage"),
        has_lora=model.data.get("lora") is not None,
    )


def _parse_gate(output: _Fields) -> Gate | None:
    if output.data.get("gate") is None:
        return None
    gate = output.obj("gate")
    minimum, maximum = (gate.float_(k, 0.0) if gate.data.get(k) is not None else None for k in ("min", "max"))
    return Gate(metric=gate.str_("metric", required=True), minimum=minimum, maximum=maximum)


def _parse_reward_model(spec: _Fields) -> RewardModel | None:
    if spec.data.get("rewardModel") is None:
        return None
    rm = spec.obj("rewardModel")
    return RewardModel(source=rm.str_("source", required=True), trust_remote_code=rm.bool_("trustRemoteCode", False))


def _parse_resources(res: _Fields) -> Resources:
    tolerations = res.list_("tolerations", Mapping) or ()
    return Resources(
        image=res.str_("image"),
        nodes=res.int_("nodes", 1, minimum=1, maximum=MAX_NODES),
        gpus_per_node=res.int_("gpusPerNode", 1, minimum=0, maximum=MAX_GPUS_PER_NODE),
        processes_per_node=res.int_("processesPerNode", None, minimum=1),
        requests=res.str_map("requests"),
        limits=res.str_map("limits"),
        node_selector=res.str_map("nodeSelector"),
        tolerations=tuple(dict(t) for t in tolerations),
        priority_class_name=res.str_("priorityClassName"),
        scheduler_name=res.str_("schedulerName"),
        queue_name=res.str_("queueName"),
        service_account_name=res.str_("serviceAccountName"),
        termination_grace_period_seconds=res.int_(
            "terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_SECONDS, minimum=1, maximum=MAX_GRACE_SECONDS
        ),
    )
