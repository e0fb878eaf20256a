"""The registry of preference-optimization algorithms prefops runs, and the losses each one accepts.

Pure data: no TRL import. `tests/trainer/test_algorithms.py` checks the DPO loss list against TRL's own
`DPOConfig` so the registry cannot drift from the library it drives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: The TRL trainer that runs an algorithm (``Algorithm.family``).
Family = Literal["dpo", "cpo", "orpo", "kto", "online-dpo"]
#: The rows an algorithm reads (``Algorithm.data``).
Data = Literal["paired", "unpaired", "prompts"]

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

# Evaluation metrics (docs/contract.md §7): the keys TRL's trainer for the algorithm logs when it evaluates, without
# TRL's ``eval_`` prefix (``loss`` is the eval loss). What ``spec.output.gate.metric`` and a sweep's
# ``objective.metric`` may name, and what the train phase serves as ``prefops_trainer_eval_*`` and reports.
_PAIR_METRICS: tuple[str, ...] = (
    "loss",
    "rewards/accuracies",
    "rewards/margins",
    "rewards/chosen",
    "rewards/rejected",
    "logps/chosen",
    "logps/rejected",
    "logits/chosen",
    "logits/rejected",
)
#: ``DPOTrainer``: the pair metrics plus the policy's entropy and top-1 token accuracy on the chosen completions.
DPO_EVAL_METRICS: tuple[str, ...] = (*_PAIR_METRICS, "entropy", "mean_token_accuracy")
#: ``CPOTrainer`` (cpo, simpo, cpo-simpo, alphapo): the pair metrics plus the NLL term.
CPO_EVAL_METRICS: tuple[str, ...] = (*_PAIR_METRICS, "nll_loss")
#: ``ORPOTrainer``: CPO's plus the odds-ratio terms.
ORPO_EVAL_METRICS: tuple[str, ...] = (*CPO_EVAL_METRICS, "log_odds_ratio", "log_odds_chosen")
#: ``KTOTrainer``: unpaired rows, so no reward accuracy; its KL estimate and entropy instead.
KTO_EVAL_METRICS: tuple[str, ...] = (*(m for m in _PAIR_METRICS if m != "rewards/accuracies"), "kl", "entropy")
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
class Algorithm:
    """How one ``spec.algorithm.name`` maps onto a TRL trainer.

    The first eight fields are the ones the operator's table (``prefops_operator.core.algorithms``) holds too;
    ``tests/contract`` compares the two tables field by field. The rest only the trainer needs.

    Attributes:
        name: the value users write in ``spec.algorithm.name``.
        reference_based: whether the loss needs reference log-probs of the dataset's completions (and so a
            precompute phase). Online DPO compares with a reference too, but on completions generated during
            training, so there is nothing to precompute.
        loss_types: the values ``spec.algorithm.lossType`` may hold.
        default_loss_types: what an absent ``lossType`` means.
        multi_loss: whether several loss types may be combined (with ``lossWeights``).
        online: generates its completions during training and needs ``spec.rewardModel`` to judge them (and
            only it may set ``spec.rewardModel`` and ``spec.generation``).
        keep_start_only: supports only ``spec.dataset.truncationMode: keep_start``.
        eval_metrics: the metrics the train phase reports when it evaluates on ``spec.dataset.evalSplit``
            (docs/contract.md §7); empty for Online DPO, which the trainer does not evaluate (TRL 1.16's
            ``OnlineDPOTrainer`` computes its metrics from generations during training steps, and its ``evaluate()``
            raises on prompt-only rows).
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

    name: str
    reference_based: bool
    loss_types: tuple[str, ...]
    default_loss_types: tuple[str, ...]
    multi_loss: bool = False
    online: bool = False
    keep_start_only: bool = False
    eval_metrics: tuple[str, ...] = ()
    family: Family = "dpo"
    data: Data = "paired"
    trl_loss_type: str | None = None
    default_cpo_alpha: float = 1.0
    default_alpha: float = 0.0


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm("dpo", True, DPO_LOSS_TYPES, ("sigmoid",), multi_loss=True, eval_metrics=DPO_EVAL_METRICS),
        Algorithm("cpo", False, ("sigmoid", "hinge", "ipo"), ("sigmoid",), eval_metrics=CPO_EVAL_METRICS, family="cpo"),
        Algorithm(
            "simpo",
            False,
            ("simpo",),
            ("simpo",),
            eval_metrics=CPO_EVAL_METRICS,
            family="cpo",
            trl_loss_type="simpo",
            default_cpo_alpha=0.0,
        ),
        Algorithm(
            "cpo-simpo",
            False,
            ("simpo",),
            ("simpo",),
            eval_metrics=CPO_EVAL_METRICS,
            family="cpo",
            trl_loss_type="simpo",
        ),
        Algorithm(
            "alphapo",
            False,
            ("alphapo",),
            ("alphapo",),
            eval_metrics=CPO_EVAL_METRICS,
            family="cpo",
            trl_loss_type="simpo",
            default_cpo_alpha=0.0,
            default_alpha=0.25,
        ),
        Algorithm("orpo", False, ("orpo",), ("orpo",), eval_metrics=ORPO_EVAL_METRICS, family="orpo"),
        Algorithm(
            "kto",
            True,
            KTO_LOSS_TYPES,
            ("kto",),
            keep_start_only=True,
            eval_metrics=KTO_EVAL_METRICS,
            family="kto",
            data="unpaired",
        ),
        Algorithm(
            "online-dpo",
            False,
            ONLINE_DPO_LOSS_TYPES,
            ("sigmoid",),
            online=True,
            keep_start_only=True,
            family="online-dpo",
            data="prompts",
        ),
    )
}

ALGORITHM_NAMES: tuple[str, ...] = tuple(ALGORITHMS)
#: Every evaluation metric some algorithm reports, in a stable order (the CRD's enum of gate and objective metrics).
ALL_EVAL_METRICS: tuple[str, ...] = tuple(dict.fromkeys(m for a in ALGORITHMS.values() for m in a.eval_metrics))


def get_algorithm(name: str) -> Algorithm:
    """Return the registry entry for ``name``; raise ``KeyError`` naming the valid ones otherwise."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise KeyError(f"unknown algorithm {name!r}; valid: {', '.join(ALGORITHM_NAMES)}") from None
