"""The recipes of docs/development.md stay true: every file a recipe names exists, and the phase recipe's table is
the one module the state machine, the children, the plan and the status read what a phase is from."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "operator" / "src" / "prefops_operator" / "core"
RECIPES = ("Add an algorithm", "Add a spec field", "Add a phase", "Add a storage backend")
#: the modules that once each held a part of what a phase is, and now read the table
READERS = ("machine.py", "transitions.py", "classify.py", "children.py", "plan.py", "status.py")
#: the state machine: what the children and their plan must not read
STATE_MACHINE = {"machine", "transitions", "classify", "observe", "waiting"}


def recipes() -> dict[str, list[str]]:
    """Each recipe's title -> the paths its list items name first (``- `path`: ...``)."""
    text = (ROOT / "docs" / "development.md").read_text()
    section = text.split("\n## Recipes\n", 1)[1].split("\n## ", 1)[0]
    out = {}
    for block in section.split("\n### ")[1:]:
        title, _, body = block.partition("\n")
        out[title.strip()] = re.findall(r"^- `([^`]+)`", body, re.M)
    return out


def core_imports(module: str) -> set[str]:
    """The sibling modules of ``core/`` that ``core/<module>`` imports (``from .x import ...``)."""
    tree = ast.parse((CORE / module).read_text())
    return {
        n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module
    }


def test_development_md_has_each_recipe_and_each_names_its_files():
    found = recipes()
    assert list(found) == list(RECIPES)
    assert all(found[title] for title in RECIPES), found


def test_every_file_a_recipe_names_exists():
    missing = [(title, path) for title, paths in recipes().items() for path in paths if not (ROOT / path).exists()]
    assert missing == []


def test_the_phase_recipe_starts_at_the_table_every_phase_reader_imports():
    table = Path(recipes()["Add a phase"][0])
    assert table.parent == CORE.relative_to(ROOT)
    assert [m for m in READERS if table.stem not in core_imports(m)] == []


def test_the_children_and_their_plan_read_the_table_not_the_state_machine():
    assert {m: core_imports(m) & STATE_MACHINE for m in ("children.py", "plan.py")} == {
        "children.py": set(),
        "plan.py": set(),
    }
