"""The checks of a job spec that the CRD schema cannot express (Kubernetes 1.20 has no CEL), in the words both
sides use: the operator fails a job with these messages before it starts (reason ``InvalidSpec``), the trainer's
parser refuses the same spec with the same messages, and a sweep names them for each trial at fault.

Each side reduces its own parsed job to :class:`JobFacts` and passes its algorithm registry (anything with the
fields of :class:`AlgorithmRule`); the checks of what only one side knows (storage on a cluster, DeepSpeed) stay
with that side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


class AlgorithmRule(Protocol):
    """What the checks read of one algorithm of a registry (both sides' registries have these fields)."""

    @property
    def name(self) -> str: ...
    @property
    def reference_based(self) -> bool: ...
    @property
    def loss_types(self) -> tuple[str, ...]: ...
    @property
    def default_loss_types(self) -> tuple[str, ...]: ...
    @property
    def multi_loss(self) -> bool: ...
    @property
    def online(self) -> bool: ...
    @property
    def keep_start_only(self) -> bool: ...
    @property
    def eval_metrics(self) -> tuple[str, ...]: ...


Registry = Mapping[str, AlgorithmRule]


@dataclass(frozen=True)
class GateFacts:
    """``spec.output.gate`` as written: ``metric`` and its bounds (exactly one should be set)."""

    metric: str
    minimum: float | None
    maximum: float | None


@dataclass(frozen=True)
class JobFacts:
    """What the checks read of a job spec; ``loss_type`` as written (``None``: the algorithm's default)."""

    algorithm: str
    loss_type: tuple[str, ...] | None
    loss_weights: tuple[float, ...] | None
    beta: float
    label_smoothing: float
    precompute: bool | None
    has_reward_model: bool
    has_generation: bool
    truncation_mode: str
    eval_split: str | None
    gate: GateFacts | None
    #: ``spec.training.deepspeed.stage``; None without DeepSpeed
    zero_stage: int | None = None
    #: whether ``spec.model.lora`` is set (else full fine-tuning)
    has_lora: bool = False


def job_problems(job: JobFacts, registry: Registry) -> list[str]:
    """Every problem of the algorithm and the gate, as ``spec.<field>: message`` strings; empty when valid. An
    unknown algorithm is reported alone (the other checks depend on it)."""
    rule = registry.get(job.algorithm)
    if rule is None:
        return [f"spec.algorithm.name: unknown algorithm {job.algorithm!r}; valid: {', '.join(registry)}"]
    return [
        *_loss_problems(job, rule),
        *_reference_problems(job, rule),
        *_online_problems(job, rule, registry),
        *_truncation_problems(job, rule),
        *_zero3_problems(job, rule),
        *gate_problems(job, rule),
    ]


def _zero3_problems(job: JobFacts, rule: AlgorithmRule) -> list[str]:
    """Online DPO's reference model is a copy of the policy (TRL's ``create_reference_model``), which TRL cannot make
    from ZeRO-3's partitioned weights; with LoRA the reference is the base model with the adapter off."""
    if job.zero_stage != 3 or not rule.online or job.has_lora:
        return []
    return [
        f"spec.training.deepspeed.stage: 3 is not supported with spec.algorithm.name {job.algorithm!r} and full "
        "fine-tuning (no spec.model.lora): TRL cannot copy the reference model out of ZeRO-3's partitioned weights; "
        "use stage 2, or LoRA (spec.model.lora)"
    ]


def _loss_problems(job: JobFacts, rule: AlgorithmRule) -> list[str]:
    losses = job.loss_type or rule.default_loss_types
    problems = []
    if job.beta <= 0:
        problems.append(f"spec.algorithm.beta: must be > 0, got {job.beta}")
    bad = [t for t in losses if t not in rule.loss_types]
    if bad:
        problems.append(
            f"spec.algorithm.lossType: {', '.join(map(repr, bad))} not valid for algorithm {rule.name!r}; "
            f"valid: {', '.join(rule.loss_types)}"
        )
    if len(losses) > 1 and not rule.multi_loss:
        problems.append(f"spec.algorithm.lossType: algorithm {rule.name!r} takes a single loss type, got {len(losses)}")
    if job.loss_weights is not None and len(job.loss_weights) != len(losses):
        problems.append(
            f"spec.algorithm.lossWeights: has {len(job.loss_weights)} weights for {len(losses)} loss types "
            f"({', '.join(losses)})"
        )
    if "exo_pair" in losses and job.label_smoothing == 0:
        problems.append("spec.algorithm.labelSmoothing: must be > 0 for lossType exo_pair (the paper uses 1e-3)")
    return problems


def _reference_problems(job: JobFacts, rule: AlgorithmRule) -> list[str]:
    if not job.precompute:
        return []
    if rule.online:
        return [
            f"spec.reference.precompute: algorithm {rule.name!r} generates its responses during training, so there "
            "are no reference log-probs to precompute; remove it or set it to false"
        ]
    if not rule.reference_based:
        return [
            f"spec.reference.precompute: algorithm {rule.name!r} is reference-free and has no reference log-probs "
            "to precompute; remove it or set it to false"
        ]
    return []


def _online_problems(job: JobFacts, rule: AlgorithmRule, registry: Registry) -> list[str]:
    if rule.online:
        if not job.has_reward_model:
            return [f"spec.rewardModel: algorithm {rule.name!r} needs a reward model to judge its generations"]
        return []
    online = " or ".join(repr(r.name) for r in registry.values() if r.online)
    return [
        f"spec.{field}: only algorithm {online} uses it, not {rule.name!r}"
        for field, present in (("rewardModel", job.has_reward_model), ("generation", job.has_generation))
        if present
    ]


def _truncation_problems(job: JobFacts, rule: AlgorithmRule) -> list[str]:
    if rule.keep_start_only and job.truncation_mode != "keep_start":
        return [f"spec.dataset.truncationMode: algorithm {rule.name!r} supports only keep_start"]
    return []


def gate_problems(job: JobFacts, rule: AlgorithmRule) -> list[str]:
    """``spec.output.gate`` (docs/contract.md §8): an evaluation metric of the algorithm, exactly one bound, and an
    eval split to measure it on."""
    gate = job.gate
    if gate is None:
        return []
    problems = []
    if not rule.eval_metrics:
        problems.append(
            f"spec.output.gate: algorithm {rule.name!r} reports no evaluation metrics, so there is nothing to gate on"
        )
    elif gate.metric not in rule.eval_metrics:
        problems.append(
            f"spec.output.gate.metric: {gate.metric!r} is not an evaluation metric of algorithm {rule.name!r}; "
            f"valid: {', '.join(rule.eval_metrics)}"
        )
    if (gate.minimum is None) == (gate.maximum is None):
        got = "both" if gate.minimum is not None else "neither"
        problems.append(f"spec.output.gate: set exactly one of min and max, got {got}")
    if not job.eval_split:
        problems.append("spec.output.gate: needs spec.dataset.evalSplit, the split the gate's metric is measured on")
    return problems
