#!/usr/bin/env python3
"""Keep the operator's derived files in step with their sources:

- the settings table of ``docs/operator.md`` (between its ``settings:begin``/``settings:end`` markers) lists every
  setting field of ``prefops_operator.config.OperatorConfig``: flag, environment variable, default, help.

    python scripts/gen_operator_files.py            # rewrite what is stale
    python scripts/gen_operator_files.py --check    # exit 1 naming what is stale (tests run this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator" / "src"))

from prefops_operator.config import OperatorConfig  # noqa: E402
from prefops_operator.core.settings import settings_of  # noqa: E402

DOCS = ROOT / "docs" / "operator.md"
BEGIN, END = "<!-- settings:begin (scripts/gen_operator_files.py) -->", "<!-- settings:end -->"


def settings_table() -> str:
    rows = ["| flag | environment | default | |", "|---|---|---|---|"]
    for _, f, meta in settings_of(OperatorConfig):
        default = (
            "all namespaces" if f.default == () else f"`{str(f.default).lower() if f.default is False else f.default}`"
        )
        choices = f" (one of {', '.join(f'`{c}`' for c in meta.choices)})" if meta.choices else ""
        rows.append(f"| `{meta.flag}` | `{meta.env_name}` | {default} | {meta.help}{choices} |")
    return "\n".join(rows)


def _default(value: object) -> str:
    if value == ():
        return "all namespaces"
    if value is False:
        return "off (`1`: on)"
    return f"`{value}`"


def expected_files() -> dict[Path, str]:
    head, rest = DOCS.read_text().split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return {DOCS: f"{head}{BEGIN}\n{settings_table()}\n{END}{tail}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale files; exit 1 when there are any")
    args = parser.parse_args()
    stale = {p: text for p, text in expected_files().items() if not p.exists() or p.read_text() != text}
    for path in sorted(stale):
        sys.stderr.write(f"{'stale' if args.check else 'wrote'}: {path.relative_to(ROOT)}\n")
        if not args.check:
            path.write_text(stale[path])
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
