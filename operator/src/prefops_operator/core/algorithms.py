"""What the operator needs to know about each algorithm: whether it needs reference log-probs (a precompute
phase) and which loss types it accepts. Pure data, mirroring the trainer's registry
(``prefops_trainer.core.algorithms``), whose first fields are these; ``tests/contract`` compares the two tables
field by field."""

from __future__ import annotations

from dataclasses import dataclass

DPO_LOSS_TYPES: tuple[str, ...] = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)


KTO_LOSS_TYPES: tuple[str, ...] = ("kto", "apo_zero_unpaired")


@dataclass(frozen=True)
class AlgorithmRule:
    """The checks and phase plan one ``spec.algorithm.name`` implies.

    Attributes:
        name: the value of ``spec.algorithm.name``.
        reference_based: the loss needs reference log-probs, so the job has a precompute phase by default.
        loss_types: values ``spec.algorithm.lossType`` may hold.
        default_loss_types: what an absent ``lossType`` means.
        multi_loss: several loss types may be combined (with ``lossWeights``).
        online: generates completions during training and needs ``spec.rewardModel`` (Online DPO).
        keep_start_only: supports only ``spec.dataset.truncationMode: keep_start``.
    """

    name: str
    reference_based: bool
    loss_types: tuple[str, ...]
    default_loss_types: tuple[str, ...]
    multi_loss: bool = False
    online: bool = False
    keep_start_only: bool = False


ALGORITHMS: dict[str, AlgorithmRule] = {
    rule.name: rule
    for rule in (
        AlgorithmRule("dpo", True, DPO_LOSS_TYPES, ("sigmoid",), multi_loss=True),
        AlgorithmRule("cpo", False, ("sigmoid", "hinge", "ipo"), ("sigmoid",)),
        AlgorithmRule("simpo", False, ("simpo",), ("simpo",)),
        AlgorithmRule("cpo-simpo", False, ("simpo",), ("simpo",)),
        AlgorithmRule("alphapo", False, ("alphapo",), ("alphapo",)),
        AlgorithmRule("orpo", False, ("orpo",), ("orpo",)),
        AlgorithmRule("kto", True, KTO_LOSS_TYPES, ("kto",), keep_start_only=True),
        AlgorithmRule("online-dpo", False, ("sigmoid", "ipo"), ("sigmoid",), online=True, keep_start_only=True),
    )
}
