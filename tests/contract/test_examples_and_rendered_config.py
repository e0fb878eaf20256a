"""Every example manifest is accepted by the CRD (the real apiserver) and by the trainer's parser; and the config
document the operator renders from a job as the apiserver serves it (defaults applied) parses with the trainer's
parser into the same job the trainer reads from the example file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prefops_operator.core.children import CONFIG_FILE, config_map
from prefops_operator.core.spec import parse_job as operator_parse
from prefops_operator.core.validation import semantic_problems
from prefops_trainer.adapters.jobfile import load_job
from prefops_trainer.core.spec import KIND
from prefops_trainer.core.spec import parse_job as trainer_parse

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def job_document(path: Path) -> dict:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict) and d.get("kind") == KIND]
    assert len(docs) == 1, path
    return docs[0]


def test_there_are_local_and_cluster_examples():
    names = {p.name for p in EXAMPLES}
    assert {"local-tiny-dpo.yaml", "dpo-lora-s3.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_parses_with_the_trainer(path):
    assert load_job(path).name == job_document(path)["metadata"]["name"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_cluster_examples_pass_the_operators_checks_and_local_ones_are_told_to_use_s3(path):
    doc = job_document(path)
    problems = semantic_problems(operator_parse(doc).spec)
    uris = (doc["spec"]["output"]["uri"], doc["spec"]["storage"]["uri"])
    if all(u.startswith("s3://") for u in uris):
        assert problems == []
    else:
        assert problems and all("s3://bucket/prefix URI on a cluster" in p for p in problems)


@pytest.mark.integration
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_is_accepted_by_the_crd_and_its_rendered_config_means_the_same_to_the_trainer(path, jobs):
    served = jobs.create(job_document(path))  # the real apiserver: schema validation, pruning, defaults
    assert served["spec"]  # nothing pruned away
    rendered = config_map(operator_parse(served))["data"][CONFIG_FILE]
    from_cluster = trainer_parse(yaml.safe_load(rendered), "configmap")
    from_file = load_job(path)
    assert from_cluster.spec == from_file.spec
    assert from_cluster.metadata.uid == served["metadata"]["uid"]
    assert from_cluster.metadata.namespace == jobs.namespace
