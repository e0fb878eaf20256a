#!/usr/bin/env python3
"""Keep the operator's copies of pure trainer modules in step with their source.

The two distributions share no Python code (DESIGN.md), yet some pure logic must give the same answer on both sides:
the memory planner the trainer's ``plan`` command and the operator's admission check both run, and the rules of a
sweep and of a job's checks (``core/rules``). Such a package is written once, in the trainer, stdlib-only and with
imports of its own modules only, and copied here byte for byte under a header naming its source. A copy is never
edited: change the source and run this script.

    python scripts/gen_shared_copies.py            # rewrite what is stale, remove what has no source
    python scripts/gen_shared_copies.py --check    # exit 1 naming what is stale (tests run this)

To share another package, add a :class:`Copy` to :data:`COPIES`.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = "# Generated from {source}\n# by scripts/gen_shared_copies.py (a test checks it is current): do not edit.\n"


@dataclass(frozen=True)
class Copy:
    """Every ``*.py`` file of the package ``source`` copied into ``target`` (paths from the repository root)."""

    source: str
    target: str


COPIES: tuple[Copy, ...] = (
    Copy("trainer/src/prefops_trainer/core/planner", "operator/src/prefops_operator/core/planner"),
    Copy("trainer/src/prefops_trainer/core/rules", "operator/src/prefops_operator/core/rules"),
)


def expected_files(copies: tuple[Copy, ...] = COPIES) -> dict[Path, str | None]:
    """Every target file and its content; ``None`` for a file in a target package that has no source (remove it)."""
    out: dict[Path, str | None] = {}
    for copy in copies:
        source, target = ROOT / copy.source, ROOT / copy.target
        for path in sorted(source.glob("*.py")):
            text = path.read_text()
            foreign = foreign_imports(text)
            if foreign:
                raise SystemExit(
                    f"{path.relative_to(ROOT)}: a shared module imports only its own package (relatively) and the "
                    f"standard library; it imports {', '.join(foreign)}"
                )
            out[target / path.name] = HEADER.format(source=path.relative_to(ROOT).as_posix()) + text
        for path in sorted(target.glob("*.py")):
            out.setdefault(path, None)
    return out


def foreign_imports(text: str) -> list[str]:
    """What ``text`` imports from outside the standard library and its own package (``from ..x`` included)."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and node.level > 1:
            found.append("." * node.level + (node.module or ""))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and not _stdlib(node.module or ""):
            found.append(node.module or "")
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if not _stdlib(alias.name)]
    return found


def _stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names


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
