#!/usr/bin/env python3
"""Keep the two prose algorithm tables equal to the trainer's registry (``prefops_trainer.core.algorithms``, whose
shared rules the operator copies) and to ``core.trlconfig.TRL_TRAINERS``: README.md's algorithm table (between its
``algorithms:begin``/``algorithms:end`` markers) and docs/contract.md §7's evaluation metrics per algorithm (between
``eval-metrics:begin``/``eval-metrics:end``). What the registry does not hold, the prose per algorithm (its knobs,
why it reports no metric), is written here once, keyed by algorithm; a new algorithm without it is refused.

    python scripts/gen_algorithm_tables.py            # rewrite the tables
    python scripts/gen_algorithm_tables.py --check    # exit 1 naming each stale file (tests run this)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "trainer" / "src"))

from prefops_trainer.core.algorithms import ALGORITHMS, Algorithm  # noqa: E402
from prefops_trainer.core.trlconfig import TRL_TRAINERS  # noqa: E402

#: The spec fields that tune each algorithm (README's "knobs" column); ``{cpo_alpha}`` and ``{alpha}`` are the
#: registry's defaults.
KNOBS = {
    "dpo": "`beta`, `labelSmoothing` (robust, exo_pair)",
    "cpo": "`beta`, `cpoAlpha` (NLL weight, default {cpo_alpha}), `labelSmoothing`",
    "simpo": "`beta` (2.0 is typical), `simpoGamma`",
    "cpo-simpo": "`beta`, `simpoGamma`, `cpoAlpha` (default {cpo_alpha})",
    "alphapo": "`beta`, `simpoGamma`, `alpha` (default {alpha})",
    "orpo": "`beta` (the odds-ratio weight λ)",
    "kto": "`beta`, `desirableWeight`, `undesirableWeight`",
    "online-dpo": "`beta`, `rewardModel {{source, revision, dtype}}`, `generation {{maxNewTokens, temperature, topP}}`",
}
#: What docs/contract.md §7 says beside (or, for an algorithm with none, instead of) its evaluation metrics.
EVAL_NOTES = {
    "kto": "(no `rewards/accuracies`: the data is unpaired; `rewards/margins` only when an eval batch holds both "
    "kinds of completion)",
    "online-dpo": "none: it computes its metrics from generations during training steps, and TRL 1.16's `evaluate()` "
    "raises on prompt-only rows, so the trainer does not evaluate it",
}
DATA = {
    "paired": "pairs",
    "unpaired": "unpaired prompt/completion/label, or pairs (converted)",
    "prompts": "prompts",
}
MULTI_LOSS = "several at once with `lossWeights` (e.g. `[sigmoid, sft]` = RPO / pref-ftx)"


def _codes(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _trainer(a: Algorithm) -> str:
    trl = TRL_TRAINERS[a.family]
    text = f"`{trl.trainer}`" + (" (experimental)" if ".experimental." in f"{trl.module}." else "")
    if a.trl_loss_type:
        text += f", loss `{a.trl_loss_type}`"
    if a.family == "cpo" and a.default_cpo_alpha == 0:
        text += ", `cpoAlpha` 0"
    return text


def _reference(a: Algorithm) -> str:
    if a.online:
        return "online (the LoRA base, or a frozen copy)"
    if not a.reference_based:
        return "none"
    return "precomputed, cached" + (" (incl. the KL completions)" if TRL_TRAINERS[a.family].kl_column else "")


def _losses(a: Algorithm) -> str:
    ordered = [*a.default_loss_types, *(t for t in a.loss_types if t not in a.default_loss_types)]
    return _codes(ordered) + (f"; {MULTI_LOSS}" if a.multi_loss else "")


def algorithm_table() -> str:
    rows = [
        "| `algorithm.name` | TRL trainer | reference | data | `lossType` (default first) | knobs |",
        "|---|---|---|---|---|---|",
    ]
    for a in ALGORITHMS.values():
        knobs = KNOBS[a.name].format(cpo_alpha=f"{a.default_cpo_alpha:g}", alpha=f"{a.default_alpha:g}")
        rows.append(f"| `{a.name}` | {_trainer(a)} | {_reference(a)} | {DATA[a.data]} | {_losses(a)} | {knobs} |")
    return "\n".join(rows)


def eval_metrics_table() -> str:
    groups: dict[tuple[str, tuple[str, ...]], list[Algorithm]] = {}
    for a in ALGORITHMS.values():
        groups.setdefault((TRL_TRAINERS[a.family].trainer, a.eval_metrics), []).append(a)
    rows = ["| algorithm | TRL trainer | evaluation metrics |", "|---|---|---|"]
    for (trainer, metrics), members in groups.items():
        rows.append(f"| {_codes([a.name for a in members])} | `{trainer}` | {_metrics(metrics, members)} |")
    return "\n".join(rows)


def _metrics(metrics: tuple[str, ...], members: list[Algorithm]) -> str:
    note = " ".join(EVAL_NOTES[a.name] for a in members if a.name in EVAL_NOTES)
    return note if not metrics else " ".join(filter(None, (_codes(metrics), note)))


@dataclass(frozen=True)
class Table:
    """A generated table in ``doc`` between the markers named ``marker``."""

    doc: str
    marker: str
    render: Callable[[], str]

    def rendered(self, text: str) -> str:
        begin, end = f"<!-- {self.marker}:begin (scripts/gen_algorithm_tables.py) -->", f"<!-- {self.marker}:end -->"
        if begin not in text or end not in text:
            raise SystemExit(f"{self.doc}: the markers {begin} and {end} are missing")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        return f"{head}{begin}\n{self.render()}\n{end}{tail}"


TABLES = (
    Table("README.md", "algorithms", algorithm_table),
    Table("docs/contract.md", "eval-metrics", eval_metrics_table),
)


def _check_prose() -> None:
    missing = [name for name in ALGORITHMS if name not in KNOBS]
    missing += [a.name for a in ALGORITHMS.values() if not a.eval_metrics and a.name not in EVAL_NOTES]
    stray = set(KNOBS) - set(ALGORITHMS) | set(EVAL_NOTES) - set(ALGORITHMS)
    if missing or stray:
        raise SystemExit(
            f"scripts/gen_algorithm_tables.py: write the prose of {missing} (KNOBS, EVAL_NOTES); "
            f"remove that of {sorted(stray)}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale tables; exit 1 when there are any")
    args = parser.parse_args()
    _check_prose()
    stale = 0
    for table in TABLES:
        path = ROOT / table.doc
        text = path.read_text()
        want = table.rendered(text)
        if want == text:
            continue
        stale += 1
        sys.stderr.write(f"{'stale' if args.check else 'wrote'}: {table.doc}\n")
        if not args.check:
            path.write_text(want)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
