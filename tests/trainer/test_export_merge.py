"""The export's streaming LoRA merge (adapters/weights.py) gives peft's ``merge_and_unload``, recomputed here, for every
model family prefix sharing knows, in float32 within 1e-6; its shards load with ``from_pretrained``; what it cannot
map file to file goes to peft on the loaded model; what it does not support is refused, named."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from support.family_models import tiny_model

from prefops_trainer.adapters import weights
from prefops_trainer.core.errors import MergeError, SpecError
from prefops_trainer.core.planner.phases import CONVERTED_CHECKPOINTS
from prefops_trainer.core.prefix_families import FAMILIES
from prefops_trainer.core.spec import parse_job
from prefops_trainer.core.weights import INDEX_FILE, NamesDiffer
from prefops_trainer.phases import export as export_phase

VOCAB = 128
#: Families whose checkpoints transformers converts on load (fused experts, a multimodal wrapper's layout, a renamed
#: router): their adapters name weights the file stores otherwise, so the export merges them with peft in memory (and
#: the planner sizes their export pod for it): the test below holds the planner's set to what the merge does.
CONVERTED = CONVERTED_CHECKPOINTS
#: Families peft cannot wrap with all-linear (it refuses their state-space projections) or whose tiny config fails.
UNWRAPPABLE = {"mamba", "mamba2", "nemotron_h", "falcon_h1", "zamba2"}
MERGEABLE = [f.model_type for f in FAMILIES if f.model_type not in UNWRAPPABLE]


def save_base_and_adapter(tmp_path, model_type, dtype=torch.float32, **lora):
    """A tiny random ``model_type`` saved as the base, and a LoRA adapter on it with random A and B (far from zero)."""
    from peft import LoraConfig, get_peft_model

    model = tiny_model(model_type, VOCAB).to(dtype)
    model.save_pretrained(tmp_path / "base")
    options = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear", "init_lora_weights": False} | lora
    torch.manual_seed(1)
    get_peft_model(model, LoraConfig(**options)).save_pretrained(tmp_path / "adapter")
    return tmp_path / "base", tmp_path / "adapter"


def peft_merged(base, adapter, dtype=torch.float32):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    return PeftModel.from_pretrained(model, adapter).merge_and_unload().state_dict()


def loaded(folder, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).state_dict()


def largest_difference(a, b):
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize("model_type", MERGEABLE)
def test_the_merged_model_equals_peft_merge_and_unload(tmp_path, model_type):
    base, adapter = save_base_and_adapter(tmp_path, model_type)
    if model_type in CONVERTED:
        with pytest.raises(NamesDiffer):
            weights.merge_lora(base, adapter, tmp_path / "streamed", 10**9)
    else:
        weights.merge_lora(base, adapter, tmp_path / "streamed", 10**9)
        assert largest_difference(loaded(tmp_path / "streamed"), peft_merged(base, adapter)) <= 1e-6
    export_phase.merge(base, adapter, tmp_path / "out", 10**9)
    want = peft_merged(base, adapter)
    assert largest_difference(loaded(tmp_path / "out"), want) <= 1e-6
    assert largest_difference(want, loaded(base)) > 1e-3, "the adapter changed the weights (the check is not vacuous)"


def test_rslora_an_embedding_adapter_and_modules_to_save_merge_as_peft_does(tmp_path):
    targets = ["q_proj", "v_proj", "down_proj", "embed_tokens"]
    base, adapter = save_base_and_adapter(
        tmp_path, "llama", target_modules=targets, use_rslora=True, modules_to_save=["lm_head"]
    )
    from safetensors.torch import load_file, save_file

    tensors = load_file(adapter / weights.ADAPTER_WEIGHTS)
    assert {"base_model.model.lm_head.weight", "base_model.model.model.embed_tokens.lora_embedding_A"} <= set(tensors)
    tensors["base_model.model.lm_head.weight"] += 0.1  # as if trained: the saved copy differs from the base
    save_file(tensors, adapter / weights.ADAPTER_WEIGHTS, metadata={"format": "pt"})
    weights.merge_lora(base, adapter, tmp_path / "out", 10**9)
    got, want = loaded(tmp_path / "out"), peft_merged(base, adapter)
    assert largest_difference(got, want) <= 1e-6
    before = loaded(base)
    for name in ("lm_head.weight", "model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight"):
        assert (want[name] - before[name]).abs().max() > 1e-3, name


def test_gpt2_conv1d_layers_merge_transposed(tmp_path):
    base, adapter = save_base_and_adapter(tmp_path, "gpt2")
    assert json.loads((adapter / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    weights.merge_lora(base, adapter, tmp_path / "out", 10**9)
    got, want = loaded(tmp_path / "out"), peft_merged(base, adapter)
    square = "transformer.h.0.attn.c_proj.weight"  # 64 x 64: only the transpose, not the shape, tells it apart
    assert got[square].shape[0] == got[square].shape[1]
    assert largest_difference(got, want) <= 1e-6


def test_a_bfloat16_base_stays_bfloat16_and_gives_peft_bits(tmp_path):
    base, adapter = save_base_and_adapter(tmp_path, "qwen2", dtype=torch.bfloat16)
    weights.merge_lora(base, adapter, tmp_path / "out", 10**9)
    assert {t.dtype for t in weights.layout(tmp_path / "out" / "model.safetensors")} == {"BF16"}
    got, want = loaded(tmp_path / "out", torch.bfloat16), peft_merged(base, adapter, torch.bfloat16)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_a_small_max_shard_size_gives_several_shards_and_an_index_that_loads(tmp_path):
    base, adapter = save_base_and_adapter(tmp_path, "llama")
    limit = 40_000
    written = weights.merge_lora(base, adapter, tmp_path / "out", limit)
    assert len(written) > 3 and written[0] == f"model-00001-of-{len(written):05d}.safetensors"
    index = json.loads((tmp_path / "out" / INDEX_FILE).read_text())
    layouts = {name: weights.layout(tmp_path / "out" / name) for name in written}
    assert index["weight_map"] == {t.name: name for name, ts in layouts.items() for t in ts}
    assert index["metadata"]["total_size"] == sum(t.nbytes for ts in layouts.values() for t in ts)
    assert all(sum(t.nbytes for t in ts) <= limit or len(ts) == 1 for ts in layouts.values())
    assert not (tmp_path / "out" / "model.safetensors").exists()
    assert largest_difference(loaded(tmp_path / "out"), peft_merged(base, adapter)) <= 1e-6


def test_resharding_full_weights_keeps_every_tensor(tmp_path):
    model = tiny_model("llama", VOCAB)
    model.save_pretrained(tmp_path / "trained")
    written = weights.reshard(tmp_path / "trained", tmp_path / "out", 50_000)
    (tmp_path / "out" / "config.json").write_bytes((tmp_path / "trained" / "config.json").read_bytes())
    assert len(written) > 1
    assert largest_difference(loaded(tmp_path / "out"), loaded(tmp_path / "trained")) == 0


def test_a_dora_adapter_is_refused_naming_the_field(tmp_path):
    base, adapter = save_base_and_adapter(tmp_path, "llama", use_dora=True)
    with pytest.raises(MergeError, match=r"adapter_config\.json: use_dora is True, which the merge does not support"):
        weights.merge_lora(base, adapter, tmp_path / "out", 10**9)
    assert not (tmp_path / "out").exists(), "nothing written"


def test_a_base_without_safetensors_is_refused_naming_the_folder(tmp_path):
    base, adapter = save_base_and_adapter(tmp_path, "llama")
    (base / "model.safetensors").rename(base / "weights.bin")
    with pytest.raises(MergeError, match=r"base: no safetensors weights \(model\.safetensors or "):
        weights.merge_lora(base, adapter, tmp_path / "out", 10**9)


def test_a_converted_family_falls_back_to_peft_with_a_warning(tmp_path, caplog):
    base, adapter = save_base_and_adapter(tmp_path, "mixtral")
    with caplog.at_level(logging.WARNING):
        export_phase.merge(base, adapter, tmp_path / "out", 10**9)
    assert "merging with peft on the whole model in memory" in caplog.text


def job(**output):
    doc = {
        "apiVersion": "prefops.dev/v1alpha1",
        "kind": "PreferenceTrainingJob",
        "metadata": {"name": "j"},
        "spec": {
            "model": {"source": "hf://a/b"},
            "dataset": {"source": "s3://b/p.jsonl"},
            "algorithm": {"name": "dpo"},
            "output": {"uri": "s3://o/m", **output},
            "storage": {"uri": "s3://w/x"},
        },
    }
    return parse_job(doc)


def test_max_shard_size_is_a_quantity_defaulting_to_5g():
    assert job().spec.output.max_shard_bytes == 5 * 10**9
    assert job(maxShardSize="2Gi").spec.output.max_shard_bytes == 2 * 2**30
    assert job(maxShardSize="1048576").spec.output.max_shard_bytes == 2**20


@pytest.mark.parametrize("bad", ["0", "5GB", "-1Gi", "", 5])
def test_a_max_shard_size_that_is_no_size_is_refused_naming_the_field(bad):
    with pytest.raises(SpecError, match=r"spec\.output\.maxShardSize: must be a size of at least 1 byte such as 5G"):
        job(maxShardSize=bad)
