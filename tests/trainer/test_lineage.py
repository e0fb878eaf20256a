"""Lineage and the published spec: prefops.json and the model card record the base model's file digests, the digest
of the data rows used, the reference cache keys, the trainer image and the library versions, recomputed here from
the files; and they carry an allowlist of the spec: never the Secret, the service account or the placement."""

import hashlib
import importlib.metadata
import json
from pathlib import Path

import pytest
import yaml
from support.trainer_jobs import TINY, job_doc

import prefops_trainer
from prefops_trainer.core import redact
from prefops_trainer.core.spec import JobSpec, parse_job
from prefops_trainer.inputs import load_inputs
from prefops_trainer.phases import export as export_phase
from prefops_trainer.phases import precompute as precompute_phase
from prefops_trainer.phases import train as train_phase

IMAGE = "registry.example/prefops/trainer@sha256:" + "ab" * 32
#: strings of the job that name its credentials, identity and placement: none may reach the published model
CANARIES = {
    "credentialsSecret": "canary-s3-secret",
    "serviceAccountName": "canary-service-account",
    "nodeSelector": "canary-gpu-pool",
    "tolerations": "canary-taint",
    "priorityClassName": "canary-priority",
    "schedulerName": "canary-scheduler",
    "queueName": "canary-queue",
    "requests": "canary-extended-resource",
}
SAMPLES = 48


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A job with every kind of withheld field, exported with PREFOPS_TRAINER_IMAGE set: (inputs, manifest, card)."""
    tmp = tmp_path_factory.mktemp("lineage")
    doc = job_doc(
        tmp,
        dataset={"source": str(TINY / "prefs-split"), "evalSplit": "test", "maxSamples": SAMPLES},
        training={"maxSteps": 2},
        storage={"uri": str(tmp / "work"), "credentialsSecret": CANARIES["credentialsSecret"]},
        resources={
            "gpusPerNode": 0,
            "serviceAccountName": CANARIES["serviceAccountName"],
            "nodeSelector": {"pool": CANARIES["nodeSelector"]},
            "tolerations": [{"key": CANARIES["tolerations"], "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": CANARIES["priorityClassName"],
            "schedulerName": CANARIES["schedulerName"],
            "queueName": CANARIES["queueName"],
            "requests": {f"example.com/{CANARIES['requests']}": 1},
        },
    )
    inputs = load_inputs(parse_job(doc))
    precompute_phase.run(inputs)
    train_phase.run(inputs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFOPS_TRAINER_IMAGE", IMAGE)
        manifest = export_phase.run(inputs)
    return inputs, manifest, (tmp / "out" / "README.md").read_text()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rows_sha256(path, n: int) -> str:
    """The digest prefops.json documents: the rows used, one canonical JSON object per line."""
    rows = [json.loads(line) for line in path.read_text().splitlines()[:n]]
    return sha256(b"".join(json.dumps(r, sort_keys=True, separators=(",", ":")).encode() + b"\n" for r in rows))


def test_the_base_model_is_recorded_by_the_sha256_of_every_file(published):
    _, manifest, card = published
    base = manifest["lineage"]["baseModel"]
    files = {p.name: sha256(p.read_bytes()) for p in (TINY / "model").iterdir() if p.is_file()}
    assert base == {"source": str(TINY / "model"), "revision": None, "sha256": files}
    assert "model.safetensors" in files
    assert f"| model.safetensors | `{files['model.safetensors']}` |" in card


def test_the_data_is_recorded_by_the_digest_of_the_rows_used_in_each_split(published):
    _, manifest, card = published
    data = manifest["lineage"]["data"]
    assert data["source"] == str(TINY / "prefs-split")
    for name, split in (("train", "train"), ("eval", "test")):
        digest = rows_sha256(TINY / "prefs-split" / f"{split}.jsonl", SAMPLES)
        assert data["splits"][name] == {"split": split, "rows": SAMPLES, "sha256": digest}
        assert digest in card


def test_the_reference_cache_keys_image_and_versions_are_recorded(published):
    inputs, manifest, card = published
    lineage = manifest["lineage"]
    for split, key in lineage["referenceCache"].items():
        cache = json.loads(Path(inputs.ws.refcache(key).join("manifest.json").path).read_text())
        assert cache["key"] == key and cache["split"] == split
    assert set(lineage["referenceCache"]) == {"train", "eval"}
    assert lineage["referenceCache"] == manifest["phases"]["precompute"]["keys"]
    assert lineage["trainerImage"] == IMAGE and IMAGE in card
    libraries = {name: importlib.metadata.version(name) for name in ("torch", "transformers", "trl", "peft")}
    assert lineage["versions"] == {"prefops": prefops_trainer.__version__, **libraries,
                                   "deepspeed": importlib.metadata.version("deepspeed")}  # fmt: skip


def test_neither_prefops_json_nor_the_card_carries_credentials_identity_or_placement(published):
    inputs, manifest, card = published
    text = json.dumps(manifest)
    for field, canary in CANARIES.items():
        assert canary not in text, f"{field} in prefops.json"
        assert canary not in card, f"{field} in the model card"
    assert str(inputs.ws.storage) not in text and str(inputs.ws.storage) not in card, "nor the work storage"
    spec = manifest["lineage"]["spec"]
    assert spec == redact.published_spec(inputs.job)
    assert set(spec) == {"model", "dataset", "algorithm", "training", "reference", "output"}
    assert set(spec["output"]) == {"merge"}, "output.uri stays out"
    shown = yaml.safe_load(card.split("```yaml\n")[1].split("```")[0])
    assert shown == {"apiVersion": "prefops.dev/v1alpha1", "kind": "PreferenceTrainingJob", "metadata": {"name": "t"},
                     "spec": spec}  # fmt: skip


def test_every_spec_field_is_either_published_or_withheld():
    fields = [(f.alias or name) for name, f in JobSpec.model_fields.items()]
    output = [(f.alias or name) for name, f in JobSpec.model_fields["output"].annotation.model_fields.items()]
    every = [f for f in fields if f != "output"] + [f"output.{f}" for f in output]
    assert sorted(redact.PUBLISHED + redact.WITHHELD) == sorted(every)


def test_the_card_s_metadata_is_yaml_that_reads_back_a_base_model_named_with_colons_hashes_and_lines(tmp_path):
    import shutil

    from prefops_trainer.phases import card, lineage

    odd = tmp_path / "base: v2 #1\nlicense: mit"
    shutil.copytree(TINY / "model", odd)
    inputs = load_inputs(parse_job(job_doc(tmp_path, model={"source": str(odd)})))
    text = card.model_card(inputs, 1, {}, True, {"lineage": lineage.lineage(inputs)})
    front = yaml.safe_load(text.split("---\n")[1])
    assert front == {"library_name": "transformers", "tags": ["prefops", "trl", "dpo", "lora"], "base_model": str(odd)}


def test_the_trainer_guide_says_what_a_published_model_carries_as_redact_does(published):
    """Code and docs agree: the image is withheld from the published spec and recorded in the lineage, on purpose."""
    import re

    _, manifest, card = published
    text = (Path(prefops_trainer.__file__).parents[3] / "docs" / "trainer.md").read_text()
    section = text.split("## What a published model carries\n", 1)[1].split("\n## ", 1)[0]
    items = dict(re.findall(r"^- ([\w ,]+?): (.*?)(?=^- |\Z)", section, re.M | re.S))
    assert re.findall(r"`([\w.]+)`", items["published"]) == list(redact.PUBLISHED)
    assert re.findall(r"`([\w.]+)`", items["withheld"]) == list(redact.WITHHELD)
    apart = items["withheld from the spec but recorded in the lineage, on purpose"]
    for field, key in redact.IN_LINEAGE.items():
        assert apart.startswith(f"`{field}` as `{key}`")
        assert field.split(".")[0] in redact.WITHHELD and field.split(".")[0] not in manifest["lineage"]["spec"]
        assert manifest["lineage"][key] == IMAGE and IMAGE in card
