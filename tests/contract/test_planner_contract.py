"""The planner is one piece of code in two distributions: the trainer's source and the operator's generated copy
agree byte for byte, read the spec with the same defaults, and know the algorithms as both tables do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.scripts import load_script

from prefops_operator.core import planner as operator_planner
from prefops_operator.core.algorithms import ALGORITHMS as OPERATOR_ALGORITHMS
from prefops_operator.core.planner import render as operator_render
from prefops_trainer.core import planner
from prefops_trainer.core.algorithms import ALGORITHMS as TRAINER_ALGORITHMS
from prefops_trainer.core.planner.job import ALGORITHMS as PLANNER_ALGORITHMS
from prefops_trainer.core.planner.render import to_document
from prefops_trainer.core.spec import parse_job
from prefops_trainer.planning import spec_document

ROOT = Path(__file__).resolve().parents[2]
CONFIG = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_attention_heads": 14,
          "num_hidden_layers": 24, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True}  # fmt: skip


def test_the_operator_s_copy_of_the_planner_is_current():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_shared_copies.py"), "--check"],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, f"run python scripts/gen_shared_copies.py:\n{result.stderr}"


def test_a_copy_that_was_edited_is_named_stale(tmp_path, monkeypatch):
    gen = load_script("gen_shared_copies")
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    (source / "a.py").write_text('"""A."""\n')
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    copies = (gen.Copy("src", "dst"),)
    expected = gen.expected_files(copies)
    assert expected == {target / "a.py": '# Generated from src/a.py\n# by scripts/gen_shared_copies.py (a test checks '
                        'it is current): do not edit.\n"""A."""\n'}  # fmt: skip
    target.mkdir()
    (target / "orphan.py").write_text("")
    assert gen.expected_files(copies)[target / "orphan.py"] is None  # a copy without a source is removed
    (source / "b.py").write_text("from prefops_trainer.core import spec\n")
    with pytest.raises(SystemExit, match="imports only its own package"):
        gen.expected_files(copies)


@pytest.mark.parametrize("line", ["import yaml", "from ..spec import JobSpec", "from kopf import on"])
def test_a_shared_module_that_reaches_outside_its_package_and_the_standard_library_is_refused(line):
    gen = load_script("gen_shared_copies")
    assert gen.foreign_imports(f"import json\nfrom . import sibling\n{line}\n") == [line.split()[1]]


def test_both_copies_plan_the_same_job_alike():
    spec = yaml.safe_load((ROOT / "examples" / "dpo-lora-s3.yaml").read_text())["spec"]
    ours = to_document(planner.plan(spec, CONFIG, gpu_memory=80 * 2**30))
    assert ours == operator_render.to_document(operator_planner.plan(spec, CONFIG, gpu_memory=80 * 2**30))


def test_the_planner_knows_every_algorithm_as_both_distributions_do():
    assert {n: (a.family, a.reference_based) for n, a in TRAINER_ALGORITHMS.items()} == PLANNER_ALGORITHMS
    assert {n: ref for n, (_, ref) in PLANNER_ALGORITHMS.items()} == {
        n: rule.reference_based for n, rule in OPERATOR_ALGORITHMS.items()
    }


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.yaml") if "sweep" not in p.name))
def test_the_planner_reads_a_manifest_as_written_as_the_trainer_reads_it_with_every_default(example):
    """The operator plans from the stored object (the CRD's defaults applied, absent fields absent); the trainer
    from its parsed spec dumped with every default. The planner's own defaults are the CRD's, so both read alike."""
    doc = yaml.safe_load((ROOT / "examples" / example).read_text())
    as_written = planner.job_from_spec(doc["spec"])
    assert as_written == planner.job_from_spec(spec_document(parse_job(doc)))
