"""The repository's scripts (``scripts/*.py``, ``scripts/cluster/*.py``), loaded as modules by path: they are not a
package, and no test edits ``sys.path``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_script(relative: str) -> ModuleType:
    """``scripts/<relative>.py`` as a module, loaded once (registered: dataclasses look their module up)."""
    qualified = "prefops_script_" + relative.replace("/", "_")
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, ROOT / "scripts" / f"{relative}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module
