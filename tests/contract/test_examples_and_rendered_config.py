"""Every example manifest is accepted by the CRD (the real apiserver) and by the trainer's parser; and the config
document the operator renders from a job as the apiserver serves it (defaults applied) parses with the trainer's
parser into the same job the trainer reads from the example file. A sweep example's trials are jobs the operator
accepts and the trainer parses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from prefops_operator.core.children import CONFIG_FILE, config_map
from prefops_operator.core.spec import parse_job as operator_parse
from prefops_operator.core.sweep_machine import SweepObserved, decide
from prefops_operator.core.sweep_spec import SWEEP_KIND, parse_sweep
from prefops_operator.core.sweep_status import SweepStatus
from prefops_operator.core.sweep_trials import expand, trial_manifest
from prefops_operator.core.timefmt import utcnow
from prefops_operator.core.validation import semantic_problems
from prefops_trainer.adapters.jobfile import load_job
from prefops_trainer.core import sweep as trainer_sweep
from prefops_trainer.core.spec import KIND
from prefops_trainer.core.spec import parse_job as trainer_parse

ROOT = Path(__file__).resolve().parents[2]
ALL_EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def kind_of(path: Path) -> str:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict) and d.get("kind")]
    assert len(docs) == 1, f"{path}: one manifest per example"
    return str(docs[0]["kind"])


EXAMPLES = [p for p in ALL_EXAMPLES if kind_of(p) == KIND]
SWEEPS = [p for p in ALL_EXAMPLES if kind_of(p) == SWEEP_KIND]


def job_document(path: Path) -> dict:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict) and d.get("kind") == KIND]
    assert len(docs) == 1, path
    return docs[0]


def test_there_are_local_and_cluster_examples_and_a_sweep():
    names = {p.name for p in EXAMPLES}
    assert {"local-tiny-dpo.yaml", "dpo-lora-s3.yaml"} <= names
    assert SWEEPS and set(EXAMPLES) | set(SWEEPS) == set(ALL_EXAMPLES)


def sweep_of(doc: dict) -> object:
    doc = {**doc, "metadata": {**doc["metadata"], "namespace": "default", "uid": "u"}}
    return parse_sweep(doc)


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_every_trial_of_a_sweep_example_passes_the_operators_and_the_trainers_checks(path):
    doc = yaml.safe_load(path.read_text())
    sweep = sweep_of(doc)
    trials = expand(sweep)
    assert len(trials) >= 2
    status = decide(SweepStatus(), SweepObserved(sweep), utcnow()).status
    if path.name.startswith("local-"):  # local paths: `prefops-trainer sweep` runs it, the operator names them alone
        cluster_only = (
            r"spec\.template\.(output|storage)\.uri: must be an s3://bucket/prefix URI on a cluster \(pods "
            r"share no filesystem\), got '[^']*'; local paths only work with prefops-trainer run"
        )
        message = status.condition("Failed").message
        assert re.fullmatch(f"{cluster_only}(; {cluster_only})*", message), message
    else:
        assert status.phase.value == "Running"
    assert trainer_sweep.problems(trainer_sweep.parse_sweep(doc)) == [], "the trainer's local sweep accepts it"
    for trial in trials:
        manifest = trial_manifest(sweep, trial, suspend=False)
        assert trainer_parse(manifest, trial.name).spec.output.uri.as_written == manifest["spec"]["output"]["uri"]


@pytest.mark.integration
@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_every_sweep_example_is_accepted_by_the_crd_and_its_trials_by_the_job_schema(path, kube_cluster, namespace):
    from support.sweeps import Sweeps

    sweeps = Sweeps(kube_cluster.custom(), kube_cluster.core(), namespace)
    served = sweeps.create(yaml.safe_load(path.read_text()))
    assert served["spec"]["template"]["training"]["lrScheduler"] == "linear"  # the job schema's defaults apply
    sweep = parse_sweep(served)
    for trial in expand(sweep):
        manifest = trial_manifest(sweep, trial, suspend=False)
        kube_cluster.custom().create_namespaced_custom_object(
            "prefops.dev", "v1alpha1", namespace, "preferencetrainingjobs", manifest, dry_run="All"
        )


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
