"""values.yaml, values.schema.json and the README's values table agree: every key is documented by a `# --`
comment above it, the schema has a property for every key and a key for every property, and the README lists them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml
from support.chart_rendering import CHART, ROOT, chart

VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def schema_paths(schema: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out = {}
    for name, prop in schema.get("properties", {}).items():
        out[f"{prefix}{name}"] = prop
        out.update(schema_paths(prop, f"{prefix}{name}."))
    return out


PATHS = schema_paths(SCHEMA)
LEAVES = sorted(p for p, prop in PATHS.items() if "properties" not in prop)


def lookup(values: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        assert isinstance(values, dict) and part in values, f"values.yaml has no key {path}"
        values = values[part]
    return values


def key_lines() -> dict[str, tuple[int, list[str]]]:
    """Each block-style key of values.yaml by dotted path: its line number and the comment lines right above it."""
    found, stack, comments = {}, [], []
    for number, line in enumerate(VALUES_TEXT.splitlines(), 1):
        if not line.strip():
            comments = []
        elif line.lstrip().startswith("#"):
            comments.append(line)
        elif match := re.match(r"^( *)([\w.-]+):", line):
            indent = len(match[1])
            stack = [(i, k) for i, k in stack if i < indent] + [(indent, match[2])]
            found[".".join(k for _, k in stack)] = (number, comments)
            comments = []
        else:
            comments = []
    return found


@pytest.mark.parametrize("path", sorted(PATHS))
def test_every_key_has_a_dash_dash_comment_directly_above_it(path):
    lines = key_lines()
    assert path in lines, f"{path} is not a block-style key of values.yaml"
    number, comments = lines[path]
    indent = " " * (len(path.split(".")) - 1) * 2
    assert comments, f"values.yaml:{number} {path} has no comment above it"
    assert comments[0].startswith(f"{indent}# -- "), f"values.yaml:{number} {path}: comment must start with '# -- '"
    assert all(c.startswith(f"{indent}#") for c in comments)


def test_every_schema_property_is_a_key_of_values_yaml():
    missing = [p for p in PATHS if not _has(VALUES, p)]
    assert not missing


def _has(values: Any, path: str) -> bool:
    for part in path.split("."):
        if not isinstance(values, dict) or part not in values:
            return False
        values = values[part]
    return True


def test_every_key_of_values_yaml_is_a_schema_property():
    """Down to the free-form values (resources, securityContext, maps, lists), whose content is the user's."""

    def unknown(values: dict[str, Any], schema: dict[str, Any], prefix: str) -> list[str]:
        out = []
        for key, value in values.items():
            prop = schema.get("properties", {}).get(key)
            if prop is None:
                out.append(f"{prefix}{key}")
            elif "properties" in prop and isinstance(value, dict):
                out += unknown(value, prop, f"{prefix}{key}.")
        return out

    assert unknown(VALUES, SCHEMA, "") == []


def test_every_section_of_the_schema_rejects_unknown_keys():
    sections = [SCHEMA] + [p for p in PATHS.values() if "properties" in p]
    assert all(s.get("additionalProperties") is False for s in sections)


def test_the_defaults_satisfy_the_schema():
    chart().validate_schema(VALUES)
    chart().validate_schema({})


@pytest.mark.parametrize("path", sorted(PATHS))
def test_the_schema_describes_each_key_with_its_values_yaml_comment(path):
    _, comments = key_lines()[path]
    text = " ".join(c.strip().removeprefix("# --").removeprefix("#").strip() for c in comments)
    assert PATHS[path].get("description") == " ".join(text.split())


def test_the_schema_type_of_each_default_is_right():
    kinds = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict, "array": list}
    wrong = [p for p in LEAVES if not isinstance(lookup(VALUES, p), kinds[PATHS[p]["type"]])]
    assert not wrong


def test_the_readme_lists_every_value_with_its_default():
    rows = {}
    for line in (CHART / "README.md").read_text().splitlines():
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 4 and re.fullmatch(r"`[\w.]+`", cells[0]):
            rows[cells[0].strip("`")] = cells[2].strip("`")
    assert sorted(rows) == LEAVES
    for path in LEAVES:
        assert json.loads(rows[path]) == lookup(VALUES, path), path


def test_schema_descriptions_readme_table_and_crd_copy_are_up_to_date():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_chart_files.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, f"run python scripts/gen_chart_files.py:\n{result.stderr}"
