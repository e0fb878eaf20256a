#!/usr/bin/env python3
"""Keep the Helm chart's derived files in step with their sources:

- ``charts/prefops/files/crds/`` is a byte-for-byte copy of ``crds/`` (Helm reads no file outside the chart);
- the ``description`` of every property in ``values.schema.json`` is the ``# --`` comment above its key in
  ``values.yaml`` (types and constraints stay hand-written in the schema);
- the values table of ``charts/prefops/README.md`` (between its ``values:begin``/``values:end`` markers) lists every
  key with its type, default and that comment.

    python scripts/gen_chart_files.py            # rewrite what is stale
    python scripts/gen_chart_files.py --check    # exit 1 naming what is stale (tests run this)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CRDS = ROOT / "crds"
CHART = ROOT / "charts" / "prefops"
BEGIN, END = "<!-- values:begin (scripts/gen_chart_files.py) -->", "<!-- values:end -->"
KEY = re.compile(r"^( *)([A-Za-z0-9_.-]+):(?: |$)")


def value_comments(text: str) -> dict[str, str]:
    """``{"dotted.key": comment}`` for every block-style key of a values.yaml: the ``# --`` comment block directly
    above it at its indentation (no blank line between), or ``""`` when it has none."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    block: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            block = []
            continue
        if stripped.startswith("#"):
            block.append(line)
            continue
        match = KEY.match(line)
        if match:
            indent, key = len(match[1]), match[2]
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, key))
            comments[".".join(k for _, k in stack)] = _doc(block, indent)
        block = []
    return comments


def _doc(block: list[str], indent: int) -> str:
    starts = [i for i, line in enumerate(block) if line.startswith(" " * indent + "# --")]
    if not starts:
        return ""
    lines = block[starts[-1] :]
    if any(not line.startswith(" " * indent + "#") for line in lines):
        return ""
    text = " ".join(line.strip().removeprefix("# --").removeprefix("#").strip() for line in lines)
    return " ".join(text.split())


def schema_paths(schema: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every property of the schema by dotted path, sections (objects with ``properties``) included."""
    out: dict[str, dict[str, Any]] = {}
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        out[path] = prop
        out.update(schema_paths(prop, f"{path}."))
    return out


def with_descriptions(schema: dict[str, Any], comments: dict[str, str], prefix: str = "") -> dict[str, Any]:
    """The schema with each property's ``description`` set to its values.yaml comment."""
    props = {}
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        prop = {k: v for k, v in prop.items() if k != "description"}
        if "properties" in prop:
            prop = with_descriptions(prop, comments, f"{path}.")
        if comments.get(path):
            prop = {"description": comments[path], **prop}
        props[name] = prop
    return {**schema, "properties": props} if "properties" in schema else schema


def _type(prop: dict[str, Any]) -> str:
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {prop.get('items', {}).get('type', 'any')}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"map of {prop['additionalProperties'].get('type', 'any')}"
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    return str(kind)


def values_table(schema: dict[str, Any], values: dict[str, Any], comments: dict[str, str]) -> str:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for path, prop in schema_paths(schema).items():
        if "properties" in prop:
            continue
        default: Any = values
        for part in path.split("."):
            default = default[part]
        shown = json.dumps(default, separators=(", ", ": ")).replace("|", "\\|")
        doc = comments.get(path, "").replace("|", "\\|")
        rows.append(f"| `{path}` | {_type(prop)} | `{shown}` | {doc} |")
    return "\n".join(rows)


def expected_files() -> dict[Path, bytes]:
    """What every derived file should contain."""
    files = {CHART / "files" / "crds" / crd.name: crd.read_bytes() for crd in sorted(CRDS.glob("*.yaml"))}
    text = (CHART / "values.yaml").read_text()
    comments = value_comments(text)
    schema = json.loads((CHART / "values.schema.json").read_text())
    schema = with_descriptions(schema, comments)
    files[CHART / "values.schema.json"] = (json.dumps(schema, indent=2, ensure_ascii=False) + "\n").encode()
    readme = (CHART / "README.md").read_text()
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    table = values_table(schema, yaml.safe_load(text), comments)
    files[CHART / "README.md"] = f"{head}{BEGIN}\n{table}\n{END}{tail}".encode()
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale files; exit 1 when there are any")
    args = parser.parse_args()
    expected = expected_files()
    extra = set((CHART / "files" / "crds").glob("*.yaml")) - set(expected)
    stale = [p for p, data in expected.items() if not p.exists() or p.read_bytes() != data]
    for path in sorted(stale) + sorted(extra):
        sys.stderr.write(f"{'stale' if args.check else 'wrote'}: {path.relative_to(ROOT)}\n")
    if args.check:
        return 1 if stale or extra else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(expected[path])
    for path in extra:
        path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
