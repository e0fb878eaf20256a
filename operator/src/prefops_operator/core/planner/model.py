# Generated from trainer/src/prefops_trainer/core/planner/model.py
# by scripts/gen_shared_copies.py (a test checks it is current): do not edit.
"""A model's shape from its ``config.json`` alone: sizes, parameter counts, the linear layers LoRA adapts.

Pure and stdlib-only (this package is copied into the operator: ``scripts/gen_shared_copies.py``). The counts are
those of ``transformers``' own modules for the families in :data:`FAMILIES`; ``tests/trainer/test_planner_model.py``
builds each family with ``transformers`` on the meta device and compares, and compares the LoRA counts of dense models
with ``peft``'s (peft adapts the fused expert tensors of mixture-of-experts layers differently per model: there an
adapter per expert is assumed). A ``model_type`` not listed is counted as a Llama-style decoder, and the plan says
so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ModelConfigError(ValueError):
    """``config.json`` cannot be planned from; the message names the key."""


@dataclass(frozen=True)
class Family:
    """How a ``model_type`` lays out its decoder layer.

    ``gated``: a SwiGLU MLP (gate, up, down) rather than two matrices; ``qkv_bias``: q, k and v carry biases;
    ``norms``: norms per layer; ``norm_bias``: LayerNorm (weight and bias) rather than RMSNorm; ``qk_norm``: per-head
    q and k norms; ``fused``: q/k/v and gate/up are single linears (their LoRA names differ, not their sizes);
    ``conv1d``: GPT-2's Conv1D layers with biases everywhere and learned positions; ``tied``: the default of
    ``tie_word_embeddings``.
    """

    gated: bool = True
    qkv_bias: bool = False
    norms: int = 2
    norm_bias: bool = False
    qk_norm: bool = False
    fused: bool = False
    conv1d: bool = False
    tied: bool = False
    moe: bool = False


FAMILIES: dict[str, Family] = {
    "llama": Family(),
    "mistral": Family(),
    "qwen2": Family(qkv_bias=True),
    "qwen3": Family(qk_norm=True),
    "gemma": Family(tied=True),
    "gemma2": Family(tied=True, norms=4),
    "phi3": Family(fused=True),
    "gpt2": Family(gated=False, norm_bias=True, conv1d=True, tied=True),
    "mixtral": Family(moe=True),
    "qwen2_moe": Family(qkv_bias=True, moe=True),
    "qwen3_moe": Family(qk_norm=True, moe=True),
}
_DEFAULT_FAMILY = Family()


@dataclass(frozen=True)
class Linear:
    """One linear layer of a decoder layer, as LoRA sees it: its module name, input and output width, and how many
    a layer has (MoE experts)."""

    name: str
    fan_in: int
    fan_out: int
    count: int = 1

    @property
    def params(self) -> int:
        return self.fan_in * self.fan_out * self.count


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs of a model. ``experts`` is 0 for a dense model."""

    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    family: Family
    known_family: bool
    experts: int = 0
    experts_per_token: int = 0
    shared_intermediate: int = 0
    max_positions: int | None = None
    stored_dtype: str | None = None

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> tuple[Linear, ...]:
        """The linear layers of one decoder layer (not the LM head), under the names ``peft`` matches."""
        h, f, q, kv = self.hidden, self.intermediate, self.q_width, self.kv_width
        fam = self.family
        if fam.conv1d:
            return (Linear("c_attn", h, 3 * h), Linear("c_proj", h, h), Linear("c_fc", h, f), Linear("c_proj", f, h))
        attn = (
            (Linear("qkv_proj", h, q + 2 * kv),)
            if fam.fused
            else (Linear("q_proj", h, q), Linear("k_proj", h, kv), Linear("v_proj", h, kv))
        ) + (Linear("o_proj", q, h),)
        return attn + self._mlp_linears()

    def _mlp_linears(self) -> tuple[Linear, ...]:
        h, f = self.hidden, self.intermediate
        if self.family.fused:
            return (Linear("gate_up_proj", h, 2 * f), Linear("down_proj", f, h))
        if not self.experts:
            return (Linear("gate_proj", h, f), Linear("up_proj", h, f), Linear("down_proj", f, h))
        e = self.experts
        names = ("w1", "w3", "w2") if self.model_type == "mixtral" else ("gate_proj", "up_proj", "down_proj")
        out = [Linear(names[0], h, f, e), Linear(names[1], h, f, e), Linear(names[2], f, h, e), Linear("gate", h, e)]
        if self.shared_intermediate:
            s = self.shared_intermediate
            out += [Linear("gate_proj", h, s), Linear("up_proj", h, s), Linear("down_proj", s, h)]
            out.append(Linear("shared_expert_gate", h, 1))
        return tuple(out)

    def layer_params(self) -> int:
        """Parameters of one decoder layer: its linears, their biases and its norms."""
        fam, h = self.family, self.hidden
        biases = 0
        if fam.conv1d:
            biases = 3 * h + h + self.intermediate + h
        elif fam.qkv_bias:
            biases = self.q_width + 2 * self.kv_width
        norms = fam.norms * h * (2 if fam.norm_bias else 1) + (2 * self.head_dim if fam.qk_norm else 0)
        return sum(lin.params for lin in self.linears()) + biases + norms

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        """Every parameter, counted once when the LM head shares the embedding's."""
        h = self.hidden
        final_norm = h * (2 if self.family.norm_bias else 1)
        positions = (self.max_positions or 0) * h if self.family.conv1d else 0
        head = 0 if self.tied else self.vocab * h
        return self.embedding_params + head + positions + final_norm + self.layers * self.layer_params()

    @property
    def largest_module_params(self) -> int:
        """The most parameters one module holds directly (DeepSpeed ZeRO-3 gathers a module at a time): usually
        the embedding."""
        return max(self.embedding_params, *(lin.fan_in * lin.fan_out for lin in self.linears()))

    def lora_params(self, rank: int, targets: tuple[str, ...]) -> int:
        """Parameters of LoRA adapters of rank ``rank`` on ``targets`` (``all-linear``: every linear layer but the
        LM head, as ``peft`` reads it)."""
        every = targets == ("all-linear",)
        chosen = [lin for lin in self.linears() if every or lin.name in targets]
        return self.layers * sum(rank * (lin.fan_in + lin.fan_out) * lin.count for lin in chosen)

    def unknown_targets(self, targets: tuple[str, ...]) -> tuple[str, ...]:
        names = {lin.name for lin in self.linears()}
        return tuple(t for t in targets if t != "all-linear" and t not in names)


def _int(cfg: Mapping[str, Any], *keys: str, default: int | None = None) -> int:
    for key in keys:
        value = cfg.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ModelConfigError(f"config.json: {key}: must be a non-negative integer, got {value!r}")
            return value
    if default is None:
        raise ModelConfigError(f"config.json: {' or '.join(keys)}: missing (needed to size the model)")
    return default


def shape_from_config(cfg: Mapping[str, Any]) -> ModelShape:
    """The :class:`ModelShape` of a model's ``config.json`` (already parsed); raise :class:`ModelConfigError`
    naming the key at fault."""
    if not isinstance(cfg, Mapping):
        raise ModelConfigError(f"config.json: expected a JSON object, got {type(cfg).__name__}")
    model_type = str(cfg.get("model_type") or "unknown")
    family = FAMILIES.get(model_type, _DEFAULT_FAMILY)
    hidden = _int(cfg, "hidden_size", "n_embd", "d_model")
    heads = _int(cfg, "num_attention_heads", "n_head")
    if heads == 0 or (hidden % heads and cfg.get("head_dim") is None):
        raise ModelConfigError(f"config.json: num_attention_heads: {heads} does not divide hidden_size {hidden}")
    experts = _int(cfg, "num_local_experts", "num_experts", default=0) if family.moe else 0
    per_expert = ("moe_intermediate_size", "intermediate_size") if experts and model_type != "mixtral" else ()
    return ModelShape(
        model_type=model_type,
        hidden=hidden,
        layers=_int(cfg, "num_hidden_layers", "n_layer", "num_layers"),
        heads=heads,
        kv_heads=_int(cfg, "num_key_value_heads", default=heads) or heads,
        head_dim=_int(cfg, "head_dim", default=hidden // heads) or hidden // heads,
        intermediate=_int(cfg, *per_expert, "intermediate_size", "n_inner", default=4 * hidden),
        vocab=_int(cfg, "vocab_size"),
        tied=bool(cfg.get("tie_word_embeddings", family.tied)),
        family=family,
        known_family=model_type in FAMILIES,
        experts=experts,
        experts_per_token=_int(cfg, "num_experts_per_tok", default=0) if experts else 0,
        shared_intermediate=_int(cfg, "shared_expert_intermediate_size", default=0) if experts else 0,
        max_positions=_int(cfg, "max_position_embeddings", "n_positions", "n_ctx", default=0) or None,
        stored_dtype=_stored_dtype(cfg),
    )


def _stored_dtype(cfg: Mapping[str, Any]) -> str | None:
    value = cfg.get("dtype") or cfg.get("torch_dtype")
    return str(value) if isinstance(value, str) else None
