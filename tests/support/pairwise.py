"""A pairwise cover: few cases in which every two factors meet in every pair of their values.

Deterministic greedy (AETG's idea over the whole product, which is small here): take the allowed case that covers
the most pairs not covered yet, the first such in product order, until none is left. A pair that no allowed case
holds is not asked for.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Case = dict[str, Any]
Pair = tuple[tuple[str, Any], tuple[str, Any]]


def pairs_of(case: Mapping[str, Any]) -> set[Pair]:
    """Every pair of (factor, value) the case holds."""
    return set(itertools.combinations(case.items(), 2))


def pairwise(factors: Mapping[str, Sequence[Any]], allowed: Callable[[Case], bool] = lambda case: True) -> list[Case]:
    """Cases (one value per factor, in the order of ``factors``) in which every pair of values of two factors that
    some allowed case holds appears at least once."""
    names = list(factors)
    cases = [dict(zip(names, values, strict=True)) for values in itertools.product(*factors.values())]
    candidates = [case for case in cases if allowed(case)]
    wanted = set().union(*(pairs_of(case) for case in candidates))
    cover: list[Case] = []
    while wanted:
        best = max(candidates, key=lambda case: len(pairs_of(case) & wanted))  # the first of the best
        cover.append(best)
        wanted -= pairs_of(best)
    return cover
