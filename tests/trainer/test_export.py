"""Export: the merged model equals the PEFT model, the manifest comes last and an interrupted export completes."""

import json
from pathlib import Path

import pytest
import torch
from support.trainer_jobs import TINY, job_doc

from prefops_trainer.adapters import storage
from prefops_trainer.core.spec import parse_job
from prefops_trainer.inputs import load_inputs
from prefops_trainer.phases import export as export_phase
from prefops_trainer.phases import precompute as precompute_phase
from prefops_trainer.phases import train as train_phase


@pytest.fixture
def trained(tmp_path):
    """A LoRA job trained for a few steps with a large learning rate (so the adapter is far from zero)."""
    job = parse_job(job_doc(tmp_path, training={"maxSteps": 6, "learningRate": 0.05}))
    inputs = load_inputs(job)
    precompute_phase.run(inputs)
    train_phase.run(inputs)
    return inputs


def test_merged_model_logits_equal_peft_model(trained, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    manifest = export_phase.run(trained)
    assert manifest["model"]["loraMerged"] is True
    adapter = Path(trained.ws.trained.path)
    base = AutoModelForCausalLM.from_pretrained(TINY / "model", dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, adapter).eval()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    untouched = AutoModelForCausalLM.from_pretrained(TINY / "model", dtype=torch.float32).eval()
    ids = torch.tensor([trained.tokenizer("what is two plus three ? sure , the answer is five .").input_ids])
    with torch.no_grad():
        want, got, before = (
            peft_model(ids).logits,
            merged(ids).logits,
            untouched(ids).logits,
        )
    assert (want - got).abs().max().item() <= 1e-4
    assert (want - before).abs().max().item() > 1e-2, "the adapter changed the model (the check is not vacuous)"
    assert not any("lora" in k for k in merged.state_dict()), "a plain model, no adapter weights left"


def test_manifest_lists_every_file_with_its_checksum(trained, tmp_path):
    manifest = export_phase.run(trained)
    out = tmp_path / "out"
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "prefops.json")
    assert [f["path"] for f in manifest["files"]] == on_disk
    for f in manifest["files"]:
        assert storage.sha256_file(out / f["path"]) == f["sha256"]
    assert json.loads((out / "prefops.json").read_text()) == json.loads(json.dumps(manifest, default=str))
    assert {"precompute", "train", "export"} <= set(manifest["phases"])
    assert manifest["phases"]["precompute"]["cacheHit"] is False
    assert manifest["phases"]["train"]["seconds"] > 0
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "training-curves.png"} <= set(on_disk)
    assert (out / "training-curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_card_names_spec_data_model_and_final_metrics(trained, tmp_path):
    export_phase.run(trained)
    card = (tmp_path / "out" / "README.md").read_text()
    assert str(TINY / "model") in card and str(TINY / "prefs.jsonl") in card and "64 pairs" in card
    assert "| rewards/accuracies |" in card and "| loss |" in card
    assert "apiVersion: prefops.dev/v1alpha1" in card and "name: dpo" in card


def test_interrupted_export_leaves_no_manifest_and_a_rerun_completes_it(trained, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_upload = storage.upload_file
    sent = []

    def failing_upload(local, uri, **kw):
        if len(sent) == 3:
            raise ConnectionError("connection reset by peer (injected)")
        sent.append(uri)
        real_upload(local, uri, **kw)

    monkeypatch.setattr(storage, "upload_file", failing_upload)
    with pytest.raises(ConnectionError):
        export_phase.run(trained)
    assert not (out / "prefops.json").exists(), "a half-written model never looks complete"
    assert len([p for p in out.iterdir() if not p.name.startswith(".")]) == 3
    monkeypatch.setattr(storage, "upload_file", real_upload)
    resent = []
    monkeypatch.setattr(
        storage,
        "upload_file",
        lambda local, uri, **kw: (resent.append(uri), real_upload(local, uri, **kw)),
    )
    manifest = export_phase.run(trained)
    assert len(resent) == len(manifest["files"]) - 3, "files that already arrived are not sent again"
    assert sorted(p.name for p in out.iterdir()) == sorted([f["path"] for f in manifest["files"]] + ["prefops.json"])
    for f in manifest["files"]:
        assert storage.sha256_file(out / f["path"]) == f["sha256"]


def test_export_without_merge_ships_the_adapter(tmp_path):
    job = parse_job(
        job_doc(
            tmp_path,
            training={"maxSteps": 2},
            output={"uri": str(tmp_path / "out"), "merge": False},
        )
    )
    inputs = load_inputs(job)
    precompute_phase.run(inputs)
    train_phase.run(inputs)
    manifest = export_phase.run(inputs)
    names = {f["path"] for f in manifest["files"]}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
    } <= names and "model.safetensors" not in names
    assert manifest["model"]["loraMerged"] is False


def test_export_before_training_is_refused(tmp_path):
    inputs = load_inputs(parse_job(job_doc(tmp_path)))
    with pytest.raises(RuntimeError, match=r"no finished training result .* run the train phase first"):
        export_phase.run(inputs)
    assert not (tmp_path / "out" / "prefops.json").exists()
