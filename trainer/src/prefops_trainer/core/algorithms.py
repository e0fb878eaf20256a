"""The registry of preference-optimization algorithms prefops runs, and the losses each one accepts.

Pure data: no TRL import. `tests/trainer/test_algorithms.py` checks the DPO loss list against TRL's own
`DPOConfig` so the registry cannot drift from the library it drives.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Every ``loss_type`` TRL 1.16's ``DPOConfig`` accepts; several may be combined with ``lossWeights``.
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

#: ``KTOConfig.loss_type`` choices.
KTO_LOSS_TYPES: tuple[str, ...] = ("kto", "apo_zero_unpaired")
#: ``OnlineDPOConfig.loss_type`` choices.
ONLINE_DPO_LOSS_TYPES: tuple[str, ...] = ("sigmoid", "ipo")


@dataclass(frozen=True)
class Algorithm:
    """How one ``spec.algorithm.name`` maps onto a TRL trainer.

    Attributes:
        name: the value users write in ``spec.algorithm.name``.
        family: which TRL trainer runs it: ``dpo`` (``trl.DPOTrainer``), ``cpo``
            (``trl.experimental.cpo.CPOTrainer``), ``orpo`` (``trl.experimental.orpo.ORPOTrainer``), ``kto``
            (``trl.KTOTrainer``) or ``online-dpo`` (``trl.experimental.online_dpo.OnlineDPOTrainer``).
        reference_based: whether the loss needs reference log-probs of the dataset's completions (and so a
            precompute phase). Online DPO compares with a reference too, but on completions generated during
            training, so there is nothing to precompute.
        data: the rows the algorithm reads: ``paired`` (prompt/chosen/rejected), ``unpaired``
            (prompt/completion/label; paired data is converted) or ``prompts`` (prompt only).
        loss_types: the values ``spec.algorithm.lossType`` may hold; empty when the loss is fixed.
        default_loss_types: what an absent ``lossType`` means.
        multi_loss: whether several loss types may be combined (with ``lossWeights``).
        trl_loss_type: the CPO ``loss_type`` a fixed-loss algorithm passes to TRL.
        default_cpo_alpha: the weight of the NLL (behaviour-cloning) term for the CPO family.
        default_alpha: the AlphaPO reward-shape parameter.
    """

    name: str
    family: str
    reference_based: bool
    loss_types: tuple[str, ...]
    default_loss_types: tuple[str, ...]
    multi_loss: bool = False
    trl_loss_type: str | None = None
    default_cpo_alpha: float = 1.0
    default_alpha: float = 0.0
    data: str = "paired"


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm("dpo", "dpo", True, DPO_LOSS_TYPES, ("sigmoid",), multi_loss=True),
        Algorithm("cpo", "cpo", False, ("sigmoid", "hinge", "ipo"), ("sigmoid",)),
        Algorithm("simpo", "cpo", False, ("simpo",), ("simpo",), trl_loss_type="simpo", default_cpo_alpha=0.0),
        Algorithm("cpo-simpo", "cpo", False, ("simpo",), ("simpo",), trl_loss_type="simpo", default_cpo_alpha=1.0),
        Algorithm(
            "alphapo",
            "cpo",
            False,
            ("alphapo",),
            ("alphapo",),
            trl_loss_type="simpo",
            default_cpo_alpha=0.0,
            default_alpha=0.25,
        ),
        Algorithm("orpo", "orpo", False, ("orpo",), ("orpo",)),
        Algorithm("kto", "kto", True, KTO_LOSS_TYPES, ("kto",), data="unpaired"),
        Algorithm("online-dpo", "online-dpo", False, ONLINE_DPO_LOSS_TYPES, ("sigmoid",), data="prompts"),
    )
}

ALGORITHM_NAMES: tuple[str, ...] = tuple(ALGORITHMS)


def get_algorithm(name: str) -> Algorithm:
    """Return the registry entry for ``name``; raise ``KeyError`` naming the valid ones otherwise."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise KeyError(f"unknown algorithm {name!r}; valid: {', '.join(ALGORITHM_NAMES)}") from None
