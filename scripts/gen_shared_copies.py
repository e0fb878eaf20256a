#!/usr/bin/env python3
"""Keep the operator's copies of pure trainer modules in step with their source.

The two distributions share no Python code (DESIGN.md), yet some pure logic must give the same answer on both sides:
the memory planner the trainer's ``plan`` command and the operator's admission check both run. Such a package is
written once, in the trainer, stdlib-only and with relative imports only, and copied here byte for byte under a
header naming its source. A copy is never edited: change the source and run this script.

    python scripts/gen_shared_copies.py            # rewrite what is stale, remove what has no source
    python scripts/gen_shared_copies.py --check    # exit 1 naming what is stale (tests run this)

To share another package, add a :class:`Copy` to :data:`COPIES`.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = "# Generated from {source}\n# by scripts/gen_shared_copies.py (a test checks it is current): do not edit.\n"
#: an import of a sibling distribution or of anything outside the standard library's reach: a copy must not have one
_ABSOLUTE_PROJECT_IMPORT = re.compile(r"^\s*(from|import)\s+prefops_(trainer|operator)\b", re.MULTILINE)


@dataclass(frozen=True)
class Copy:
    """Every ``*.py`` file of the package ``source`` copied into ``target`` (paths from the repository root)."""

    source: str
    target: str


COPIES: tuple[Copy, ...] = (
    Copy("trainer/src/prefops_trainer/core/planner", "operator/src/prefops_operator/core/planner"),
    Copy("trainer/src/prefops_trainer/core/userinfo", "operator/src/prefops_operator/core/userinfo"),
)


def expected_files(copies: tuple[Copy, ...] = COPIES) -> dict[Path, str | None]:
    """Every target file and its content; ``None`` for a file in a target package that has no source (remove it)."""
    out: dict[Path, str | None] = {}
    for copy in copies:
        source, target = ROOT / copy.source, ROOT / copy.target
        for path in sorted(source.glob("*.py")):
            text = path.read_text()
            if _ABSOLUTE_PROJECT_IMPORT.search(text):
                raise SystemExit(f"{path.relative_to(ROOT)}: a shared module imports only its own package, relatively")
            out[target / path.name] = HEADER.format(source=path.relative_to(ROOT).as_posix()) + text
        for path in sorted(target.glob("*.py")):
            out.setdefault(path, None)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale files; exit 1 when there are any")
    args = parser.parse_args()
    stale = {
        p: text
        for p, text in expected_files().items()
        if (text is None and p.exists()) or (text is not None and (not p.exists() or p.read_text() != text))
    }
    for path, text in sorted(stale.items()):
        verb = (
            ("stale" if text is not None else "orphan") if args.check else ("wrote" if text is not None else "removed")
        )
        sys.stderr.write(f"{verb}: {path.relative_to(ROOT)}\n")
        if args.check:
            continue
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
