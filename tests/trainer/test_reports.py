"""The phase reports and prefops.json have types (issue 20): what a real run writes is exactly what
``core.reports`` declares (no key the type lacks, every required key, every value of its declared type), and the
contract's list of the manifest's keys is the type's."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints, is_typeddict

import pytest
from support.trainer_jobs import ROOT, TINY, run_cli, write_job

from prefops_trainer.core import reports


def problems(value: Any, declared: Any, where: str) -> list[str]:
    """How ``value`` (parsed JSON) departs from the type ``declared``; empty when it conforms."""
    if is_typeddict(declared):
        return _typeddict_problems(value, declared, where)
    origin, args = get_origin(declared), get_args(declared)
    if origin in (Union, types.UnionType):
        found = [problems(value, alternative, where) for alternative in args]
        return [] if [] in found else [f"{where}: {value!r:.60} is none of {declared}"]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {value!r:.60} is not an object"]
        return [p for k, v in value.items() for p in problems(k, args[0], where) + problems(v, args[1], f"{where}.{k}")]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {value!r:.60} is not a list"]
        return [p for i, item in enumerate(value) for p in problems(item, args[0], f"{where}[{i}]")]
    return [] if _is_instance(value, declared) else [f"{where}: {value!r:.60} is not {declared}"]


def _typeddict_problems(value: Any, declared: Any, where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: {value!r:.60} is not an object ({declared.__name__})"]
    hints = get_type_hints(declared)
    found = [f"{where}.{k}: written, but {declared.__name__} has no such key" for k in value if k not in hints]
    found += [f"{where}.{k}: {declared.__name__} requires it" for k in declared.__required_keys__ if k not in value]
    return found + [p for k, v in value.items() if k in hints for p in problems(v, hints[k], f"{where}.{k}")]


def _is_instance(value: Any, declared: Any) -> bool:
    if declared is Any:
        return True
    if declared is type(None):
        return value is None
    if isinstance(value, bool) and declared is not bool:
        return False
    return isinstance(value, (int, float) if declared is float else declared)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A tiny job run end to end, evaluated and gated (so every optional part of the manifest is written)."""
    tmp = tmp_path_factory.mktemp("reports")
    job = write_job(tmp, dataset={"source": str(TINY / "prefs-split"), "evalSplit": "test"},
                    output={"uri": str(tmp / "out"), "gate": {"metric": "loss", "max": 5.0}})  # fmt: skip
    result = run_cli("run", job)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp


def written(tmp: Path, pattern: str) -> Any:
    (path,) = tmp.rglob(pattern)
    return json.loads(path.read_text())


@pytest.mark.parametrize(
    ("pattern", "declared"),
    [
        ("out/prefops.json", reports.Manifest),
        ("phases/precompute.json", reports.PrecomputeReport),
        ("attempts/*/phases/train.json", reports.TrainReport),
        ("phases/export.json", reports.ExportReport),
    ],
    ids=["prefops.json", "precompute", "train", "export"],
)
def test_what_a_run_writes_is_what_its_type_declares(finished, pattern, declared):
    doc = written(finished, pattern)
    assert problems(doc, declared, pattern) == []


def test_the_manifest_carries_every_part_its_type_makes_optional_once_the_job_evaluates_and_gates(finished):
    manifest = written(finished, "out/prefops.json")
    assert set(manifest) == set(reports.manifest_keys())
    assert set(manifest["phases"]) == set(get_type_hints(reports.Phases))


def test_the_checker_finds_a_renamed_key_a_missing_one_and_a_wrong_type():
    good = {"key": "k", "cacheHit": True}
    assert problems(good, reports.SplitEntry, "e") == []
    assert problems({"key": "k", "cachehit": True}, reports.SplitEntry, "e") == [
        "e.cachehit: written, but SplitEntry has no such key",
        "e.cacheHit: SplitEntry requires it",
    ]
    assert problems({**good, "pairs": "12"}, reports.SplitEntry, "e") == ["e.pairs: '12' is not <class 'int'>"]


def test_the_contract_lists_the_manifest_keys_of_the_type():
    text = (ROOT / "docs" / "contract.md").read_text()
    listed = re.search(r"^`prefops.json` holds: (.+?) \(", text, re.M | re.S)[1]
    assert re.findall(r"`(\w+)`", listed) == reports.manifest_keys()
