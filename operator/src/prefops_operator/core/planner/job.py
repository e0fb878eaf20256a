# Generated from trainer/src/prefops_trainer/core/planner/job.py
# by scripts/gen_shared_copies.py (a test checks it is current): do not edit.
"""What the plan reads of a job: the spec's sizing fields as a frozen :class:`PlanJob`, with the CRD's defaults.

Both distributions build it from the manifest's ``spec`` mapping (camelCase, as written or as the apiserver stores
it): the trainer from its parsed spec dumped with every default, the operator from the stored object. The defaults
below are the CRD's; ``tests/contract/test_planner_contract.py`` holds them equal to the trainer's spec and the
algorithm table below equal to both distributions' own tables. Pure and stdlib-only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: name -> (TRL trainer family, reference-based). The trainer's and the operator's algorithm tables agree (a test).
ALGORITHMS: dict[str, tuple[str, bool]] = {
    "dpo": ("dpo", True),
    "cpo": ("cpo", False),
    "simpo": ("cpo", False),
    "cpo-simpo": ("cpo", False),
    "alphapo": ("cpo", False),
    "orpo": ("orpo", False),
    "kto": ("kto", True),
    "online-dpo": ("online-dpo", False),
}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(?:([eE][0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E))?$")
_SUFFIX = {
    "": 1,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}  # fmt: skip


class PlanInputError(ValueError):
    """A spec field the plan reads is unusable; the message names it."""


def parse_quantity(value: object, field: str) -> int:
    """A Kubernetes memory quantity (``80Gi``, ``81920Mi``, ``8e10``, ``85899345920``) in bytes."""
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else None
    match = _QUANTITY.match(text) if text is not None else None
    if match is None:
        raise PlanInputError(f"{field}: must be a memory quantity such as 80Gi, got {value!r}")
    number, exponent, suffix = match.groups()
    scale = 10 ** int(exponent[1:]) if exponent else _SUFFIX[suffix or ""]
    return int(float(number) * scale)


def format_bytes(n: float) -> str:
    """``n`` bytes the way Kubernetes quantities read: ``61.2Gi``, ``512Mi``, ``0``."""
    for suffix, scale in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.1f}{suffix}" if value < 100 else f"{value:.0f}{suffix}"
    return str(int(n))


@dataclass(frozen=True)
class Lora:
    rank: int
    targets: tuple[str, ...]


@dataclass(frozen=True)
class PlanJob:
    """The sizing facts of one job, CRD defaults applied."""

    algorithm: str
    family: str
    reference_based: bool
    dtype: str  # auto | float32 | bfloat16 | float16
    attn: str  # auto | eager | sdpa | flash_attention_2 | flex_attention
    lora: Lora | None
    max_length: int
    keep_start: bool
    kl_term: bool  # KTO's KL term (loss kto)
    batch: int
    accumulation: int
    checkpointing: bool
    prefix_sharing: bool
    zero_stage: int | None  # None: no DeepSpeed
    offload: bool
    checkpoints_to_keep: int
    precompute: bool
    reference_batch: int
    reference_tokens: int | None
    reference_workers: int
    reference_sharding: str  # auto | replicated | zero3
    nodes: int
    gpus_per_node: int
    processes_per_node: int
    gpu_memory: int | None
    max_new_tokens: int
    reward_dtype: str | None  # None: no reward model
    merge: bool

    @property
    def gpu(self) -> bool:
        return self.gpus_per_node > 0

    @property
    def world_size(self) -> int:
        return self.nodes * self.processes_per_node

    @property
    def compute_dtype(self) -> str:
        """``auto`` resolved as the trainer resolves it: bfloat16 on GPUs (Ampere and newer), float32 on CPUs."""
        return _resolve(self.dtype, self.gpu)

    @property
    def reward_compute_dtype(self) -> str:
        return _resolve(self.reward_dtype or "auto", self.gpu)


def _resolve(dtype: str, gpu: bool) -> str:
    if dtype != "auto":
        return dtype
    return "bfloat16" if gpu else "float32"


class _Reader:
    """Typed reads of one mapping of the spec; errors name ``path.key``."""

    def __init__(self, data: object, path: str) -> None:
        if data is not None and not isinstance(data, Mapping):
            raise PlanInputError(f"{path}: must be an object, got {type(data).__name__}")
        self.data: Mapping[str, Any] = data or {}
        self.path = path

    def sub(self, key: str) -> _Reader:
        return _Reader(self.data.get(key), f"{self.path}.{key}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise PlanInputError(f"{self.path}.{key}: must be {getattr(kind, '__name__', kind)}, got {value!r}")
        return value

    def present(self, key: str) -> bool:
        return self.data.get(key) is not None


def job_from_spec(spec: Mapping[str, Any], gpu_memory: int | None = None) -> PlanJob:
    """The :class:`PlanJob` of a manifest's ``spec``; ``gpu_memory`` (bytes) overrides
    ``spec.resources.gpuMemory``. Raises :class:`PlanInputError` naming the field."""
    s = _Reader(spec, "spec")
    algo, training, ref, res = s.sub("algorithm"), s.sub("training"), s.sub("reference"), s.sub("resources")
    name = algo.get("name", str, "")
    if name not in ALGORITHMS:
        raise PlanInputError(f"spec.algorithm.name: unknown algorithm {name!r}; valid: {', '.join(ALGORITHMS)}")
    family, reference_based = ALGORITHMS[name]
    losses = algo.get("lossType", list, None) or (["kto"] if family == "kto" else ["sigmoid"])
    gpus = res.get("gpusPerNode", int, 1)
    ds = training.sub("deepspeed")
    memory = res.get("gpuMemory", (str, int), None)
    return PlanJob(
        algorithm=name,
        family=family,
        reference_based=reference_based,
        dtype=s.sub("model").get("dtype", str, "auto"),
        attn=s.sub("model").get("attnImplementation", str, "auto"),
        lora=_lora(s.sub("model")),
        max_length=s.sub("dataset").get("maxLength", int, 1024),
        keep_start=s.sub("dataset").get("truncationMode", str, "keep_start") == "keep_start",
        kl_term=family == "kto" and losses[0] == "kto",
        batch=training.get("perDeviceBatchSize", int, 4),
        accumulation=training.get("gradientAccumulation", int, 1),
        checkpointing=training.get("gradientCheckpointing", bool, False),
        prefix_sharing=training.get("prefixSharing", bool, True),
        zero_stage=ds.get("stage", int, None) if training.present("deepspeed") else None,
        offload=ds.get("offload", str, "none") == "cpu",
        checkpoints_to_keep=training.get("checkpointsToKeep", int, 2),
        precompute=ref.get("precompute", bool, reference_based),
        reference_batch=ref.get("batchSize", int, 8),
        reference_tokens=ref.get("tokensPerBatch", int, None),
        reference_workers=ref.get("workers", int, 1),
        reference_sharding=ref.get("sharding", str, "auto"),
        nodes=res.get("nodes", int, 1),
        gpus_per_node=gpus,
        processes_per_node=res.get("processesPerNode", int, None) or max(gpus, 1),
        gpu_memory=gpu_memory if gpu_memory is not None else _memory(memory),
        max_new_tokens=s.sub("generation").get("maxNewTokens", int, 64),
        reward_dtype=s.sub("rewardModel").get("dtype", str, "auto") if s.present("rewardModel") else None,
        merge=s.sub("output").get("merge", bool, True),
    )


def _lora(model: _Reader) -> Lora | None:
    if not model.present("lora"):
        return None
    lora = model.sub("lora")
    targets = lora.get("targetModules", list, ["all-linear"])
    return Lora(rank=lora.get("r", int, 16), targets=tuple(str(t) for t in targets))


def _memory(value: object) -> int | None:
    return None if value is None else parse_quantity(value, "spec.resources.gpuMemory")
