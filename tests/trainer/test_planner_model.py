"""The planner's model shapes against the libraries that build the models: every family's parameter count equals the
one ``transformers`` builds from the same config (on the meta device: no weights), and LoRA's trainable count equals
``peft``'s."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

from prefops_trainer.core.planner import ModelConfigError, shape_from_config
from prefops_trainer.core.planner.model import FAMILIES

SMALL = {"hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 1000, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}  # fmt: skip
CONFIGS = {
    "llama": SMALL,
    "mistral": SMALL,
    "qwen2": SMALL,
    "qwen3": {**SMALL, "head_dim": 32},
    "gemma": {**SMALL, "num_key_value_heads": 1, "head_dim": 32},
    "gemma2": {**SMALL, "head_dim": 32},
    "phi3": SMALL,
    "gpt2": {"n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 1000, "n_positions": 128},
    "mixtral": {**SMALL, "num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2_moe": {
        **SMALL,
        "moe_intermediate_size": 48,
        "shared_expert_intermediate_size": 96,
        "num_experts": 4,
        "num_experts_per_tok": 2,
    },
    "qwen3_moe": {**SMALL, "moe_intermediate_size": 48, "num_experts": 4, "num_experts_per_tok": 2, "head_dim": 16},
}


def built(model_type: str) -> tuple[torch.nn.Module, dict]:
    config = AutoConfig.for_model(model_type, **CONFIGS[model_type])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return model, json.loads(config.to_json_string())


def test_every_family_the_planner_knows_is_tested_here():
    assert set(CONFIGS) == set(FAMILIES)


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_the_parameter_count_is_the_one_transformers_builds(model_type):
    model, config = built(model_type)
    counted = sum({id(p): p.numel() for p in model.parameters()}.values())  # a tied head counts once
    shape = shape_from_config(config)
    assert shape.params == counted
    assert shape.tied == (model.get_output_embeddings().weight is model.get_input_embeddings().weight)


@pytest.mark.parametrize(
    ("model_type", "targets"),
    [
        ("llama", ("all-linear",)),
        ("qwen2", ("q_proj", "v_proj")),
        ("phi3", ("all-linear",)),
        ("gemma2", ("o_proj", "down_proj")),
        ("gpt2", ("all-linear",)),
    ],
)
def test_the_lora_parameter_count_is_peft_s(model_type, targets):
    """Dense models only: peft adapts mixture-of-experts layers' fused expert tensors differently per model
    (docs/planner.md, not modelled)."""
    model, config = built(model_type)
    target = "all-linear" if targets == ("all-linear",) else list(targets)
    peft_model = get_peft_model(model.to_empty(device="cpu"), LoraConfig(r=8, target_modules=target))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert shape_from_config(config).lora_params(8, targets) == trainable


def test_a_config_without_a_size_the_plan_needs_fails_naming_the_key():
    config = {k: v for k, v in built("llama")[1].items() if k != "vocab_size"}
    with pytest.raises(ModelConfigError, match=r"config.json: vocab_size: missing"):
        shape_from_config(config)
    with pytest.raises(ModelConfigError, match=r"config.json: hidden_size: must be a non-negative integer"):
        shape_from_config({**config, "vocab_size": 10, "hidden_size": "big"})


def test_an_unknown_model_type_is_counted_as_a_llama_style_decoder_and_said_so():
    shape = shape_from_config({**built("llama")[1], "model_type": "somebody-elses"})
    assert not shape.known_family
    assert shape.params == shape_from_config(built("llama")[1]).params
