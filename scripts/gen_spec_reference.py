#!/usr/bin/env python3
"""Generate docs/spec-reference.md from the CRDs' OpenAPI schemas, the one place each field is documented: the
PreferenceTrainingJob spec, then the PreferenceTrainingSweep spec (whose template is the job spec).

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
SWEEP_CRD = ROOT / "crds" / "prefops.dev_preferencetrainingsweeps.yaml"
OUT = ROOT / "docs" / "spec-reference.md"


def _type(schema: dict) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "int or string"
    if "type" not in schema and schema.get("x-kubernetes-preserve-unknown-fields"):
        return "any"
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


def rows(schema: dict, path: str, required: set[str], stop: frozenset[str] = frozenset()) -> list[str]:
    """One table row per property under ``schema``, recursively except below the paths in ``stop``."""
    out = []
    for name, prop in schema.get("properties", {}).items():
        here = f"{path}.{name}"
        default = f"`{json.dumps(prop['default'])}`" if "default" in prop else ""
        desc = " ".join(str(prop.get("description", "")).split()).replace("|", "\\|")
        need = "yes" if name in required else ""
        out.append(f"| `{here}` | {_type(prop)} | {need} | {default} | {_constraints(prop)} | {desc} |")
        if here in stop:
            continue
        if prop.get("type") == "object" and "properties" in prop:
            out += rows(prop, here, set(prop.get("required", [])))
        elif prop.get("type") == "array" and "properties" in prop.get("items", {}):
            out += rows(prop["items"], f"{here}[]", set(prop["items"].get("required", [])))
    return out


def _spec(path: Path) -> tuple[dict, dict, dict]:
    crd = yaml.safe_load(path.read_text())
    version = crd["spec"]["versions"][0]
    return crd, version, version["schema"]["openAPIV3Schema"]["properties"]["spec"]


def render() -> str:
    crd, version, spec = _spec(CRD)
    sweep_crd, _, sweep = _spec(SWEEP_CRD)
    lines = [
        "# PreferenceTrainingJob spec reference",
        "",
        f"`{crd['spec']['group']}/{version['name']}` `{crd['spec']['names']['kind']}` (short name "
        f"`{crd['spec']['names']['shortNames'][0]}`). Generated from `crds/` by `scripts/gen_spec_reference.py`; "
        "`kubectl explain ptj.spec.<field>` shows the same text (Kubernetes 1.27 and later: older apiservers publish "
        "no fields below spec, which keeps unknown fields for the operator to name). Checks the schema cannot "
        "express (loss types per algorithm, lossWeights length, ...) are listed with each field and enforced by the "
        "operator and the trainer.",
        "",
        "| field | type | required | default | allowed | description |",
        "|---|---|---|---|---|---|",
        *rows(spec, "spec", set(spec.get("required", []))),
        "",
        "# PreferenceTrainingSweep spec reference",
        "",
        f"`{sweep_crd['spec']['group']}/{version['name']}` `{sweep_crd['spec']['names']['kind']}` (short name "
        f"`{sweep_crd['spec']['names']['shortNames'][0]}`). `spec.template` is the PreferenceTrainingJob spec above "
        "(the CRD carries a copy, kept equal by `scripts/gen_sweep_crd.py`). Exactly one of `parameters` and `trials`. "
        "Checks the schema cannot express (paths that are no job field, values the job schema rejects, an objective "
        "a trial's algorithm does not report, a missing eval split) fail the sweep with reason InvalidSpec, naming "
        "the field; docs/operator.md describes how the operator runs a sweep.",
        "",
        "| field | type | required | default | allowed | description |",
        "|---|---|---|---|---|---|",
        *rows(sweep, "spec", set(sweep.get("required", [])), frozenset({"spec.template"})),
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
