"""The registry of preference-optimization algorithms prefops runs: the shared rules of each
(:mod:`.rules.algorithms`: loss types, reference, evaluation metrics; the operator holds a generated copy) and how
it maps onto a TRL trainer.

Pure data: no TRL import. `tests/trainer/test_algorithms.py` checks the DPO loss list against TRL's own
`DPOConfig` so the registry cannot drift from the library it drives.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, TypedDict

from .rules.algorithms import (
    ALL_EVAL_METRICS,
    CPO_EVAL_METRICS,
    DPO_EVAL_METRICS,
    DPO_LOSS_TYPES,
    KTO_EVAL_METRICS,
    KTO_LOSS_TYPES,
    ONLINE_DPO_LOSS_TYPES,
    ORPO_EVAL_METRICS,
    RULES,
    AlgorithmRule,
)

__all__ = [
    "ALGORITHMS",
    "ALGORITHM_NAMES",
    "ALL_EVAL_METRICS",
    "CPO_EVAL_METRICS",
    "DPO_EVAL_METRICS",
    "DPO_LOSS_TYPES",
    "KTO_EVAL_METRICS",
    "KTO_LOSS_TYPES",
    "ONLINE_DPO_LOSS_TYPES",
    "ORPO_EVAL_METRICS",
    "Algorithm",
    "Data",
    "EvalMetric",
    "Family",
    "get_algorithm",
]

#: The TRL trainer that runs an algorithm (``Algorithm.family``).
Family = Literal["dpo", "cpo", "orpo", "kto", "online-dpo"]
#: The rows an algorithm reads (``Algorithm.data``).
Data = Literal["paired", "unpaired", "prompts"]

#: The type of an evaluation metric's name in the spec (``output.gate.metric``): every metric some algorithm reports,
#: in the order of :data:`ALL_EVAL_METRICS` (the CRD's enum; a test keeps the three equal).
EvalMetric = Literal[
    "loss",
    "rewards/accuracies",
    "rewards/margins",
    "rewards/chosen",
    "rewards/rejected",
    "logps/chosen",
    "logps/rejected",
    "logits/chosen",
    "logits/rejected",
    "entropy",
    "mean_token_accuracy",
    "nll_loss",
    "log_odds_ratio",
    "log_odds_chosen",
    "kl",
]


@dataclass(frozen=True)
class Algorithm(AlgorithmRule):
    """How one ``spec.algorithm.name`` maps onto a TRL trainer: its shared rule
    (:class:`.rules.algorithms.AlgorithmRule`, the operator's too) and what only the trainer needs.

    Attributes:
        family: which TRL trainer runs it: ``dpo`` (``trl.DPOTrainer``), ``cpo``
            (``trl.experimental.cpo.CPOTrainer``), ``orpo`` (``trl.experimental.orpo.ORPOTrainer``), ``kto``
            (``trl.KTOTrainer``) or ``online-dpo`` (``trl.experimental.online_dpo.OnlineDPOTrainer``); the key of
            ``core.trlconfig.TRL_TRAINERS``.
        data: the rows the algorithm reads: ``paired`` (prompt/chosen/rejected), ``unpaired``
            (prompt/completion/label; paired data is converted) or ``prompts`` (prompt only).
        trl_loss_type: the CPO ``loss_type`` a fixed-loss algorithm passes to TRL.
        default_cpo_alpha: the weight of the NLL (behaviour-cloning) term for the CPO family.
        default_alpha: the AlphaPO reward-shape parameter.
    """

    family: Family = "dpo"
    data: Data = "paired"
    trl_loss_type: str | None = None
    default_cpo_alpha: float = 1.0
    default_alpha: float = 0.0


class _Trl(TypedDict, total=False):
    family: Family
    data: Data
    trl_loss_type: str
    default_cpo_alpha: float
    default_alpha: float


#: What each algorithm adds to its rule (absent: the defaults of :class:`Algorithm`, DPO's).
_TRL: dict[str, _Trl] = {
    "dpo": {},
    "cpo": {"family": "cpo"},
    "simpo": {"family": "cpo", "trl_loss_type": "simpo", "default_cpo_alpha": 0.0},
    "cpo-simpo": {"family": "cpo", "trl_loss_type": "simpo"},
    "alphapo": {"family": "cpo", "trl_loss_type": "simpo", "default_cpo_alpha": 0.0, "default_alpha": 0.25},
    "orpo": {"family": "orpo"},
    "kto": {"family": "kto", "data": "unpaired"},
    "online-dpo": {"family": "online-dpo", "data": "prompts"},
}


def _algorithm(rule: AlgorithmRule) -> Algorithm:
    shared = {f.name: getattr(rule, f.name) for f in fields(AlgorithmRule)}
    return Algorithm(**shared, **_TRL[rule.name])


ALGORITHMS: dict[str, Algorithm] = {name: _algorithm(rule) for name, rule in RULES.items()}
ALGORITHM_NAMES: tuple[str, ...] = tuple(ALGORITHMS)


def get_algorithm(name: str) -> Algorithm:
    """Return the registry entry for ``name``; raise ``KeyError`` naming the valid ones otherwise."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise KeyError(f"unknown algorithm {name!r}; valid: {', '.join(ALGORITHM_NAMES)}") from None
