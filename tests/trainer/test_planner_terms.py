"""The planner's terms against what computes them for real: DeepSpeed's own estimators for the model states, autograd's
saved tensors for the activations, TRL's kernel (its tile, and the allocator's rise while it runs) for the LM head.

The activations are counted with ``torch.autograd.graph.saved_tensors_hooks`` (every tensor a layer keeps for
backward, parameters excluded), per layer by the difference between a 2- and a 4-layer model, on the CPU; what
differs on a GPU is named in docs/planner.md.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import torch
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
from peft import LoraConfig, get_peft_model
from torch._C._profiler import _EventType
from transformers import LlamaConfig, LlamaForCausalLM

from prefops_trainer.adapters import trl_bridge
from prefops_trainer.core.planner import job_from_spec, shape_from_config, terms
from prefops_trainer.core.planner.terms import MicroBatch

QWEN_7B = {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_attention_heads": 28,
           "num_hidden_layers": 28, "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False}  # fmt: skip
TINY = {"model_type": "llama", "hidden_size": 128, "intermediate_size": 344, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 1000, "num_hidden_layers": 2, "tie_word_embeddings": False}  # fmt: skip


def setup(config: dict[str, Any], **spec: Any) -> terms.Setup:
    base: dict[str, Any] = {"algorithm": {"name": "dpo"}, "resources": {"gpusPerNode": 8}}
    for key, value in spec.items():
        base[key] = {**base.get(key, {}), **value}
    return terms.setup(job_from_spec(base), shape_from_config(config))


def model_states(s: terms.Setup) -> int:
    return terms.weights(s) + terms.trainable_extra(s) + terms.gradients(s, at_step=True) + terms.optimizer_states(s)


@pytest.mark.parametrize("nodes", [1, 2, 4])
@pytest.mark.parametrize("offload", [False, True])
def test_zero2_model_states_are_deepspeed_s_estimate(nodes, offload):
    s = setup(QWEN_7B, training={"deepspeed": {"stage": 2, "offload": "cpu" if offload else "none"}},
              resources={"nodes": nodes})  # fmt: skip
    _, gpu = estimate_zero2_model_states_mem_needs(s.params, 8, nodes, cpu_offload=offload)
    assert model_states(s) == pytest.approx(gpu, abs=64)


@pytest.mark.parametrize("nodes", [1, 2, 4])
@pytest.mark.parametrize("offload", [False, True])
def test_zero3_model_states_and_gathered_module_are_deepspeed_s_estimate(nodes, offload):
    s = setup(QWEN_7B, training={"deepspeed": {"stage": 3, "offload": "cpu" if offload else "none"}},
              resources={"nodes": nodes})  # fmt: skip
    _, gpu, largest = estimate_zero3_model_states_mem_needs(
        s.params, s.shape.largest_module_params, 8, nodes, cpu_offload=offload, cpu_offload_params=offload
    )
    assert model_states(s) + largest == pytest.approx(gpu, abs=64)
    assert terms.communication(s) >= largest


def test_lora_trains_only_the_adapters_whose_states_are_float32():
    s = setup(QWEN_7B, model={"lora": {"r": 16}})
    assert terms.weights(s) == s.params * 2  # bfloat16 base weights, frozen
    assert terms.optimizer_states(s) == 8 * s.trainable  # two float32 moments per adapter parameter
    assert terms.gradients(s, at_step=True) == 4 * s.trainable


# -- activations: the formula against autograd's saved tensors -----------------------------------------------------


def saved_per_token_per_layer(dtype: torch.dtype, attn: str, lora: tuple[str, ...] | None, masked: bool) -> float:
    """What one decoder layer saves for backward per token: a 4-layer model's saved bytes minus a 2-layer one's."""
    rows, seq = 2, 96
    ids = torch.randint(0, TINY["vocab_size"], (rows, seq))
    mask = torch.ones(rows, 1, seq, seq, dtype=torch.bool).tril() if masked else None
    totals = []
    for layers in (2, 4):
        torch.manual_seed(0)
        config = LlamaConfig(**{**TINY, "num_hidden_layers": layers}, attn_implementation=attn)
        model = LlamaForCausalLM(config).to(dtype).train()
        if lora:
            model = get_peft_model(model, LoraConfig(r=8, target_modules=list(lora) if lora != ("all-linear",)
                                                     else "all-linear", lora_dropout=0.0))  # fmt: skip
        totals.append(_saved(model, ids, mask, autocast=lora is not None and dtype != torch.float32))
    return (totals[1] - totals[0]) / 2 / (rows * seq)


def _saved(model: Any, ids: torch.Tensor, mask: torch.Tensor | None, autocast: bool) -> int:
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    backbone = model.get_base_model().model if hasattr(model, "get_base_model") else model.model
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), cast:
        backbone(input_ids=ids, attention_mask=mask, use_cache=False)
    return sum(seen.values())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("lora", [None, ("all-linear",), ("q_proj", "v_proj"), ("o_proj",)])
@pytest.mark.parametrize("masked", [False, True])
def test_a_layers_activations_are_what_autograd_saves(dtype, attn, lora, masked):
    """The trainer computes a 16-bit model with float32 adapters under autocast, as here."""
    model: dict[str, Any] = {"dtype": dtype, "attnImplementation": attn}
    if lora:
        model["lora"] = {"r": 8, "targetModules": list(lora)}
    s = setup(TINY, model=model, resources={"gpusPerNode": 0})
    mb = MicroBatch(2, 96, 2 * 96, masked=masked, packed=False)
    measured = saved_per_token_per_layer(getattr(torch, dtype), attn, lora, masked)
    casts = terms.adapter_casts(s) / s.shape.layers / mb.tokens  # per step, not per token: spread as measured here
    assert terms.layer_activations(s, mb) + casts == pytest.approx(measured, rel=0.01)


# -- the LM head ---------------------------------------------------------------------------------------------------


def test_the_planner_sizes_the_head_by_trl_s_own_tile():
    assert trl_bridge.head_tile() == (terms.TOKEN_TILE, terms.VOCAB_TILE)


def _rise(fn: Any) -> int:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    nodes, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.children)
    return max(n.extra_fields.total_allocated for n in nodes if n.tag == _EventType.Allocation)


@pytest.mark.parametrize(("n", "vocab"), [(600, 8192), (600, 20000), (1500, 8192)])
def test_the_cpu_working_set_of_trl_s_kernel_is_the_planned_one(n, vocab):
    """On a CPU (no Triton) the kernel's torch fallback holds float32 copies of its tile; the DPO loss sends the
    gradient of the log-probs only (its entropy is a metric)."""
    s = setup({**TINY, "vocab_size": vocab}, model={"dtype": "float32"}, resources={"gpusPerNode": 0})
    hidden = torch.randn(n, TINY["hidden_size"], requires_grad=True)
    weight, targets = torch.randn(vocab, TINY["hidden_size"]), torch.randint(0, vocab, (n,))
    outputs = ("log_probs", "entropy", "mean_logits", "is_top1")
    out: list[Any] = []
    forward = _rise(lambda: out.extend(trl_bridge.head_kernel(hidden, weight, targets, outputs)))
    backward = _rise(lambda: out[0].sum().backward()) - n * TINY["hidden_size"] * 4  # the hidden states' gradient
    assert terms.head_tiles(s, n, terms.TILE_COPIES_FORWARD) == pytest.approx(forward, rel=0.1)
    assert terms.head_tiles(s, n, terms.TILE_COPIES_BACKWARD) == pytest.approx(backward, rel=0.1)
