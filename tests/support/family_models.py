"""Tiny random models of the transformers families prefix sharing knows (``core/prefix_families.py``): each family's
default config shrunk to a few layers of width 64, with a sliding window shorter than the test pairs, so a lost
window shows."""

from __future__ import annotations

from typing import Any

#: Small values for whichever of these a family's config has.
SMALL: dict[str, Any] = {
    "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 256, "moe_intermediate_size": 32,
    "num_experts": 4, "num_local_experts": 4, "num_experts_per_tok": 2, "n_routed_experts": 4, "n_shared_experts": 1,
    "shared_expert_intermediate_size": 32, "n_embd": 64, "n_layer": 2, "n_head": 4, "d_model": 64, "n_heads": 4,
    "n_layers": 2, "ffn_dim": 96, "num_layers": 2, "n_positions": 256, "kv_lora_rank": 16, "q_lora_rank": 16,
    "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16, "first_k_dense_replace": 1, "rotary_dim": 8,
    "state_size": 8, "expand": 2, "conv_kernel": 4, "time_step_rank": 8, "mamba_d_state": 8, "mamba_n_heads": 4,
    "mamba_d_head": 32, "mamba_head_dim": 32, "mamba_expand": 2, "lru_width": 64, "attention_window_size": 4,
    "block_size": 16, "linear_num_value_heads": 4, "linear_num_key_heads": 2, "linear_key_head_dim": 16,
    "linear_value_head_dim": 16, "block_ff_dim": 96, "n_group": 1, "topk_group": 1, "num_heads": 4,
    "mamba_n_groups": 1, "n_groups": 1, "ssm_state_size": 8, "num_attention_layers": 1,
}  # fmt: skip

#: What a family needs besides :data:`SMALL` (its sizes tied to each other, or layers of each kind it has).
OVERRIDES: dict[str, dict[str, Any]] = {
    "deepseek_v3": {"head_dim": 8, "qk_head_dim": 16, "num_key_value_heads": 4},
    "lfm2": {"layer_types": ["conv", "full_attention"], "full_attn_idxs": [1]},
    "mamba": {"intermediate_size": 128, "time_step_rank": 8},
    "mamba2": {"head_dim": 32, "num_heads": 4, "chunk_size": 8},
    "zamba2": {"mamba_headdim": 32, "attention_hidden_size": 128, "attention_head_dim": 32, "n_mamba_heads": 4,
               "chunk_size": 8, "hybrid_layer_ids": [1]},
    "gpt_neo": {"window_size": 4, "attention_types": [[["local", "global"], 1]], "attention_layers": ["local", "global"]},
    "llama4_text": {"attention_chunk_size": 4, "layer_types": ["chunked_attention", "full_attention"],
                    "moe_layers": [], "no_rope_layers": [1, 1]},
}  # fmt: skip

#: Families whose layer types we set to one sliding and one full layer (their defaults slide nowhere).
SLIDING_TOO = {"qwen2", "qwen2_moe", "qwen3", "smollm3"}

#: The window of every sliding-window layer: shorter than the pairs, so each packed row crosses it.
WINDOW = 4


#: The sub-configs of a multimodal wrapper (gemma3 and the like): the text model is shrunk as a family is, the
#: others to :data:`SMALL`'s sizes (left alone, gemma3's were 2.7B parameters: 11 GB and minutes per test).
TEXT_CONFIG = "text_config"
OTHER_CONFIGS = ("vision_config", "audio_config")


def tiny_config(model_type: str, vocab: int) -> Any:
    """``model_type``'s default config, shrunk; its layer types (when it has them) one of each kind, in order."""
    from transformers import AutoConfig

    cfg = AutoConfig.for_model(model_type)
    _shrink(cfg, model_type, vocab)
    if getattr(cfg, TEXT_CONFIG, None) is not None:
        _shrink(getattr(cfg, TEXT_CONFIG), model_type, vocab)
    for name in OTHER_CONFIGS:
        if getattr(cfg, name, None) is not None:
            _set_small(getattr(cfg, name))
    return cfg


def _set_small(cfg: Any) -> None:
    settable = {k for k, v in vars(type(cfg)).items() if not isinstance(v, property)}
    for key, value in SMALL.items():
        if key in vars(cfg) or (key in settable and hasattr(cfg, key)):
            setattr(cfg, key, value)


def _shrink(cfg: Any, model_type: str, vocab: int) -> None:
    _set_small(cfg)
    if getattr(cfg, "sliding_window", None) is not None or hasattr(cfg, "sliding_window"):
        cfg.sliding_window = WINDOW
    kinds = list(dict.fromkeys(getattr(cfg, "layer_types", None) or []))
    if kinds and "layer_types" in vars(cfg):
        cfg.layer_types = (kinds * cfg.num_hidden_layers)[: max(cfg.num_hidden_layers, len(kinds))]
        cfg.num_hidden_layers = len(cfg.layer_types)
    if model_type in SLIDING_TOO:
        cfg.use_sliding_window, cfg.layer_types = True, ["sliding_attention", "full_attention"]
    for key, value in OVERRIDES.get(model_type, {}).items():
        setattr(cfg, key, value)
    cfg.vocab_size, cfg.pad_token_id = vocab, 0


def tiny_model(model_type: str, vocab: int, attn: str = "sdpa", seed: int = 0) -> Any:
    """A random float32 model of ``model_type`` with ``attn`` (eager where the family supports no other)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, vocab), dtype=torch.float32)
    try:
        model.set_attn_implementation(attn)
    except ValueError:
        model.set_attn_implementation("eager")
    return model.eval()
