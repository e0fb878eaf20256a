"""What the operator knows of each algorithm: the shared rules (:mod:`.rules.algorithms`, a generated copy of the
trainer's; docs/contract.md §7), named here for the operator's modules."""

from __future__ import annotations

from .rules.algorithms import ALL_EVAL_METRICS, DPO_LOSS_TYPES, AlgorithmRule
from .rules.algorithms import RULES as ALGORITHMS

__all__ = ["ALGORITHMS", "ALL_EVAL_METRICS", "DPO_LOSS_TYPES", "AlgorithmRule"]
