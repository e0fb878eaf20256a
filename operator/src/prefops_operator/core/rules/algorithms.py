# Generated from trainer/src/prefops_trainer/core/rules/algorithms.py
# by scripts/gen_shared_copies.py (a test checks it is current): do not edit.
"""What both sides know of each algorithm: whether it needs reference log-probs (a precompute phase), which loss
types it accepts, whether it generates online, and which evaluation metrics it reports. Pure data.

The trainer's registry (``prefops_trainer.core.algorithms``) extends each rule with how it maps onto a TRL trainer;
``tests/trainer/test_algorithms.py`` checks the DPO loss list against TRL's own ``DPOConfig`` and
``tests/contract/test_evaluation_contract.py`` the evaluation metrics against what TRL's trainers log when they
evaluate (docs/contract.md §7).
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

# Evaluation metrics (docs/contract.md §7): the keys TRL's trainer for the algorithm logs when it evaluates, without
# TRL's ``eval_`` prefix; ``loss`` is the eval loss. What ``output.gate.metric`` and a sweep's ``objective.metric``
# may name, what ``status.evaluation.metrics`` holds and what the trainer serves as ``prefops_trainer_eval_*``.
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
#: ``trl.DPOTrainer``: the pair metrics plus the policy's entropy and top-1 token accuracy on chosen completions.
DPO_EVAL_METRICS: tuple[str, ...] = (*_PAIR_METRICS, "entropy", "mean_token_accuracy")
#: ``trl.experimental.cpo.CPOTrainer`` (cpo, simpo, cpo-simpo, alphapo): the pair metrics plus the NLL term.
CPO_EVAL_METRICS: tuple[str, ...] = (*_PAIR_METRICS, "nll_loss")
#: ``trl.experimental.orpo.ORPOTrainer``: CPO's plus the odds-ratio terms.
ORPO_EVAL_METRICS: tuple[str, ...] = (*CPO_EVAL_METRICS, "log_odds_ratio", "log_odds_chosen")
#: ``trl.KTOTrainer``: unpaired, so no reward accuracy; its KL estimate and entropy instead.
KTO_EVAL_METRICS: tuple[str, ...] = (
    *(m for m in _PAIR_METRICS if m != "rewards/accuracies"),
    "kl",
    "entropy",
)
#: ``trl.experimental.online_dpo.OnlineDPOTrainer`` computes its metrics from generations during training steps and
#: none when it evaluates (its ``evaluate()`` raises on prompt-only rows): an online-dpo job has no evaluation metric
#: to gate on or to compare trials by.
ONLINE_DPO_EVAL_METRICS: tuple[str, ...] = ()


@dataclass(frozen=True)
class AlgorithmRule:
    """The checks and phase plan one ``spec.algorithm.name`` implies.

    Attributes:
        name: the value of ``spec.algorithm.name``.
        reference_based: the loss needs reference log-probs of the dataset's completions, so the job has a
            precompute phase by default. Online DPO compares with a reference too, but on completions generated
            during training, so there is nothing to precompute.
        loss_types: values ``spec.algorithm.lossType`` may hold.
        default_loss_types: what an absent ``lossType`` means.
        multi_loss: several loss types may be combined (with ``lossWeights``).
        online: generates completions during training and needs ``spec.rewardModel`` to judge them (and only it may
            set ``spec.rewardModel`` and ``spec.generation``).
        keep_start_only: supports only ``spec.dataset.truncationMode: keep_start``.
        eval_metrics: the evaluation metrics the trainer reports for it on ``spec.dataset.evalSplit``
            (docs/contract.md §7).
    """

    name: str
    reference_based: bool
    loss_types: tuple[str, ...]
    default_loss_types: tuple[str, ...]
    multi_loss: bool = False
    online: bool = False
    keep_start_only: bool = False
    eval_metrics: tuple[str, ...] = ()


RULES: dict[str, AlgorithmRule] = {
    rule.name: rule
    for rule in (
        AlgorithmRule("dpo", True, DPO_LOSS_TYPES, ("sigmoid",), multi_loss=True, eval_metrics=DPO_EVAL_METRICS),
        AlgorithmRule("cpo", False, ("sigmoid", "hinge", "ipo"), ("sigmoid",), eval_metrics=CPO_EVAL_METRICS),
        AlgorithmRule("simpo", False, ("simpo",), ("simpo",), eval_metrics=CPO_EVAL_METRICS),
        AlgorithmRule("cpo-simpo", False, ("simpo",), ("simpo",), eval_metrics=CPO_EVAL_METRICS),
        AlgorithmRule("alphapo", False, ("alphapo",), ("alphapo",), eval_metrics=CPO_EVAL_METRICS),
        AlgorithmRule("orpo", False, ("orpo",), ("orpo",), eval_metrics=ORPO_EVAL_METRICS),
        AlgorithmRule("kto", True, KTO_LOSS_TYPES, ("kto",), keep_start_only=True, eval_metrics=KTO_EVAL_METRICS),
        AlgorithmRule(
            "online-dpo",
            False,
            ONLINE_DPO_LOSS_TYPES,
            ("sigmoid",),
            online=True,
            keep_start_only=True,
            eval_metrics=ONLINE_DPO_EVAL_METRICS,
        ),
    )
}

#: Every evaluation metric some algorithm reports, in a stable order (the CRD's enum of gate and objective metrics).
ALL_EVAL_METRICS: tuple[str, ...] = tuple(dict.fromkeys(m for rule in RULES.values() for m in rule.eval_metrics))
