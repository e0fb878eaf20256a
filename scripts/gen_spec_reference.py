#!/usr/bin/env python3
"""Generate docs/spec-reference.md from the CRD's OpenAPI schema, the one place each field is documented.

python scripts/gen_spec_reference.py            # rewrite docs/spec-reference.md
python scripts/gen_spec_reference.py --check    # exit 1 when the file is out of date (tests run this)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CRD = ROOT / "crds" / "prefops.dev_preferencetrainingjobs.yaml"
OUT = ROOT / "docs" / "spec-reference.md"


def _type(schema: dict) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "int or string"
    t = schema.get("type", "object")
    if t == "array":
        return f"[]{_type(schema.get('items', {}))}"
    if t == "object" and "additionalProperties" in schema:
        return f"map[string]{_type(schema['additionalProperties'])}"
    return t


def _constraints(schema: dict) -> str:
    parts = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    for key, word, exclusive in (("minimum", "≥", ">"), ("maximum", "≤", "<")):
        if key in schema:
            bound = exclusive if schema.get(f"exclusive{key.capitalize()}") else word
            parts.append(f"{bound} {schema[key]}")
    for key, word in (("minLength", "length ≥"), ("minItems", "items ≥")):
        if key in schema:
            parts.append(f"{word} {schema[key]}")
    items = schema.get("items", {})
    if "enum" in items:
        parts.append("each one of " + ", ".join(f"`{v}`" for v in items["enum"]))
    return "; ".join(parts)


def rows(schema: dict, path: str, required: set[str]) -> list[str]:
    out = []
    for name, prop in schema.get("properties", {}).items():
        here = f"{path}.{name}"
        default = f"`{json.dumps(prop['default'])}`" if "default" in prop else ""
        desc = " ".join(str(prop.get("description", "")).split()).replace("|", "\\|")
        need = "yes" if name in required else ""
        out.append(f"| `{here}` | {_type(prop)} | {need} | {default} | {_constraints(prop)} | {desc} |")
        if prop.get("type") == "object" and "properties" in prop:
            out += rows(prop, here, set(prop.get("required", [])))
        elif prop.get("type") == "array" and "properties" in prop.get("items", {}):
            out += rows(prop["items"], f"{here}[]", set(prop["items"].get("required", [])))
    return out


def render() -> str:
    crd = yaml.safe_load(CRD.read_text())
    version = crd["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    lines = [
        "# PreferenceTrainingJob spec reference",
        "",
        f"`{crd['spec']['group']}/{version['name']}` `{crd['spec']['names']['kind']}` (short name "
        f"`{crd['spec']['names']['shortNames'][0]}`). Generated from `crds/` by `scripts/gen_spec_reference.py`; "
        "`kubectl explain ptj.spec.<field>` shows the same text. Checks the schema cannot express (loss types per "
        "algorithm, lossWeights length, ...) are listed with each field and enforced by the operator and the trainer.",
        "",
        "| field | type | required | default | allowed | description |",
        "|---|---|---|---|---|---|",
        *rows(spec, "spec", set(spec.get("required", []))),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true")
    text = render()
    if p.parse_args().check:
        if not OUT.exists() or OUT.read_text() != text:
            sys.exit(f"{OUT.relative_to(ROOT)} is out of date: run python scripts/gen_spec_reference.py")
        return
    OUT.write_text(text)


if __name__ == "__main__":
    main()
