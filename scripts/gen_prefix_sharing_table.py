#!/usr/bin/env python3
"""Keep the family table of ``docs/prefix-sharing.md`` (between its ``families:begin``/``families:end`` markers) equal
to the trainer's registry, ``prefops_trainer.core.prefix_families.FAMILIES``: each family, whether prefix sharing
packs it, how its masks are built or why it is refused, and the test that holds it.

    python scripts/gen_prefix_sharing_table.py            # rewrite the table
    python scripts/gen_prefix_sharing_table.py --check    # exit 1 when it is stale (tests run this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "trainer" / "src"))

from prefops_trainer.core.prefix_families import FAMILIES, Family  # noqa: E402

DOC = ROOT / "docs" / "prefix-sharing.md"
BEGIN, END = "<!-- families:begin (scripts/gen_prefix_sharing_table.py) -->", "<!-- families:end -->"
TESTS = "tests/trainer/test_prefix_families.py"


def _test(f: Family) -> str:
    if f.packed:
        return f"`test_a_packed_family_gives_trls_log_probs_loss_and_gradients[{f.model_type}]`"
    if f.checked:
        return f"`test_a_refused_family_is_refused_and_packing_it_anyway_differs_or_fails[{f.model_type}]`"
    return "none: no tiny model of it builds here; refused from its code"


def table() -> str:
    head = "| family | `model_type` | status | masks, or why refused | test |"
    rows = [f"Tests: `{TESTS}`.", "", head, "|---|---|---|---|---|"]
    for f in sorted(FAMILIES, key=lambda f: (not f.packed, f.name.lower())):
        status = "packed" if f.packed else "refused"
        masks = f"{f.masks}: {f.note}" if f.packed else f.note
        rows.append(f"| {f.name} | `{f.model_type}` | {status} | {masks} | {_test(f)} |")
    return "\n".join(rows)


def rendered(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report a stale table; exit 1 when it is")
    args = parser.parse_args()
    text = DOC.read_text()
    want = rendered(text)
    if want == text:
        return 0
    sys.stderr.write(f"{'stale' if args.check else 'wrote'}: {DOC.relative_to(ROOT)}\n")
    if args.check:
        return 1
    DOC.write_text(want)
    return 0


if __name__ == "__main__":
    sys.exit(main())
