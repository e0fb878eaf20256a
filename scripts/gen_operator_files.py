#!/usr/bin/env python3
"""Keep the operator's derived files in step with their sources:

- the settings table of ``docs/operator.md`` (between its ``settings:begin``/``settings:end`` markers) lists every
  setting field of ``prefops_operator.config.OperatorConfig``: flag, environment variable, default, help;
- ``operator/src/prefops_operator/core/known_fields.py`` holds every field of the job spec the CRD declares, so the
  operator names a field it does not know (the CRD keeps unknown fields rather than pruning them).

    python scripts/gen_operator_files.py            # rewrite what is stale
    python scripts/gen_operator_files.py --check    # exit 1 naming what is stale (tests run this)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator" / "src"))

from prefops_operator.config import OperatorConfig  # noqa: E402
from prefops_operator.core.settings import settings_of  # noqa: E402

DOCS = ROOT / "docs" / "operator.md"
CRD = ROOT / "crds" / "prefops.dev_preferencetrainingjobs.yaml"
KNOWN_FIELDS = ROOT / "operator" / "src" / "prefops_operator" / "core" / "known_fields.py"
KNOWN_FIELDS_HEAD = '''"""Every field of a PreferenceTrainingJob's spec, as the CRD declares them.

Generated from crds/ by scripts/gen_operator_files.py (a test checks it is current): do not edit.

An object is a dict of its fields; ``MAP`` is a map whose keys are free (``resources.requests``); a one-item list
is a list of such items; ``None`` is a value. ``DEFAULTS`` holds the default the CRD gives each field that has one
(dotted path under spec; objects and fields inside lists left out).
"""

from __future__ import annotations

from typing import Any

MAP = "*"

SPEC: dict[str, Any] = '''
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


def field_tree(schema: dict[str, Any]) -> Any:
    """The declared fields under ``schema`` (see KNOWN_FIELDS_HEAD for the encoding)."""
    if "properties" in schema:
        return {name: field_tree(prop) for name, prop in schema["properties"].items()}
    if isinstance(schema.get("additionalProperties"), dict):
        return "MAP"
    if schema.get("type") == "array" and "properties" in schema.get("items", {}):
        return [field_tree(schema["items"])]
    return None


def render(tree: Any, indent: int = 0) -> str:
    """``tree`` as Python source that ruff format leaves as it is (every collection expanded, trailing commas)."""
    pad, inner = " " * indent, " " * (indent + 4)
    if isinstance(tree, dict):
        if not tree:
            return "{}"
        items = "".join(f'{inner}"{k}": {render(v, indent + 4)},\n' for k, v in tree.items())
        return f"{{\n{items}{pad}}}"
    if isinstance(tree, list):
        return f"[\n{inner}{render(tree[0], indent + 4)},\n{pad}]"
    return str(tree)


def field_defaults(schema: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"dotted.path": default}`` of every field under ``schema`` whose CRD default is not an object."""
    out: dict[str, Any] = {}
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        if "default" in prop and not isinstance(prop["default"], dict):
            out[path] = prop["default"]
        out.update(field_defaults(prop, f"{path}."))
    return out


def literal(value: Any) -> str:
    """``value`` as Python source in ruff format's style (double-quoted strings)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return f"[{', '.join(literal(v) for v in value)}]"
    return repr(value)


def render_defaults(defaults: dict[str, Any]) -> str:
    items = "".join(f'    "{k}": {literal(v)},\n' for k, v in sorted(defaults.items()))
    return f"{{\n{items}}}"


def known_fields() -> str:
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    defaults = render_defaults(field_defaults(spec))
    return f"{KNOWN_FIELDS_HEAD}{render(field_tree(spec))}\n\nDEFAULTS: dict[str, Any] = {defaults}\n"


def expected_files() -> dict[Path, str]:
    head, rest = DOCS.read_text().split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return {DOCS: f"{head}{BEGIN}\n{settings_table()}\n{END}{tail}", KNOWN_FIELDS: known_fields()}


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
