"""Which model families prefix sharing packs, and how each one's attention takes the packed mask. Pure.

A packed row ``[prompt, chosen, rejected]`` gives TRL's numbers only when every layer mixes tokens through the
attention mask we hand it, at the positions we hand it. That holds for a family when

* its attention goes through transformers' attention interface, which takes a prepared 4D mask as given;
* its positions come from ``position_ids`` alone (rotary, learned absolute), not from the mask (ALiBi) or the
  column index;
* it has no layer that mixes tokens another way (state-space, recurrent, convolution or linear-attention layers
  would carry the chosen tokens into the rejected ones);
* its windowed layers get the window in our mask: a sliding-window layer lets a query see keys fewer than
  ``config.sliding_window`` positions back (transformers' rule, which the TRL bridge checks), so the packed mask of
  such a layer is ANDed with ``position(query) - position(key) < window``. Positions, not columns, because in TRL's
  right-padded rows the two are the same, and in the packed row a rejected token keeps its TRL position.

How a family takes its masks (:data:`Masks`):

* ``one``: one mask for every layer; windowed by ``config.sliding_window`` when the family reads it and it is set
  (``window: True``, Mistral's style);
* ``by-layer-type``: ``{layer type: mask}``, one per entry of ``config.layer_types`` (``full_attention``,
  ``sliding_attention``), as Gemma 2/3, Qwen2 and gpt-oss build theirs.

:data:`FAMILIES` lists every family we checked: those packed are held equal to TRL's own unpacked forward, loss and
gradients in ``tests/trainer/test_prefix_families.py`` (a tiny random model of each, windows shorter than the
pairs); a refused family is named with why. A family not listed (or a model with remote code) is not packed:
``docs/prefix-sharing.md`` is generated from this table (``scripts/gen_prefix_sharing_table.py --check``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Masks = Literal["one", "by-layer-type"]

#: Layer types whose mask we build: no window, and ``config.sliding_window``.
FULL, SLIDING = "full_attention", "sliding_attention"


@dataclass(frozen=True)
class Family:
    """One model family (a transformers ``model_type``).

    Attributes:
        model_type: ``config.model_type``.
        name: how people call it.
        masks: how its attention takes the packed mask; None: refused.
        window: (``one`` only) it windows every layer by ``config.sliding_window`` when that is set.
        note: a packed family: what its mask does; a refused one: why it is refused, one line.
        checked: the tests build a tiny model of it (every packed family; a refused one whose tiny config the tests
            cannot build is refused from reading its code).
    """

    model_type: str
    name: str
    masks: Masks | None
    note: str
    window: bool = False
    checked: bool = True

    @property
    def packed(self) -> bool:
        return self.masks is not None


@dataclass(frozen=True)
class MaskPlan:
    """The masks a packed forward hands the model: ``layers`` maps a layer type to its window (None: none); with
    ``by_layer_type`` false there is one mask, under the key ``""``."""

    by_layer_type: bool
    layers: Mapping[str, int | None]


@dataclass(frozen=True)
class Verdict:
    """Prefix sharing for one model: the mask plan, or why the pairs keep TRL's layout (one line)."""

    plan: MaskPlan | None
    reason: str = ""

    @property
    def packed(self) -> bool:
        return self.plan is not None

    @property
    def status(self) -> str:
        """``on``, or ``off: <reason>``: what the log, the phase report and the job's status say."""
        return "on" if self.plan is not None else f"off: {self.reason}"


_ROPE = "rotary positions from position_ids, one causal mask"
_SLIDING_ONE = "every layer windowed by config.sliding_window when it is set (the window goes into the packed mask)"
_BY_TYPE = "one mask per layer type: sliding_attention layers windowed by config.sliding_window, the others full"
_ALIBI = "ALiBi: its attention bias is built from the attention mask's columns, not from position_ids"
_OWN_ATTENTION = "eager only (its own attention): our additive mask on top of its own causal one"
_LOCAL_BY_COLUMN = "its local-attention layers window by column, not by position: the packed row would move windows"
_MULTIMODAL = "multimodal wrapper: its masks add image blocks; train the text model (gemma3_text) instead"
_MIXING = "{what} layers mix tokens outside attention: the chosen tokens would reach the rejected ones"


def _packed(model_type: str, name: str, masks: Masks = "one", window: bool = False, note: str = "") -> Family:
    default = _BY_TYPE if masks == "by-layer-type" else _SLIDING_ONE if window else _ROPE
    return Family(model_type, name, masks, note or default, window)


def _refused(model_type: str, name: str, why: str, checked: bool = True) -> Family:
    return Family(model_type, name, None, why, checked=checked)


FAMILIES: tuple[Family, ...] = (
    _packed("llama", "Llama 2/3"),
    _packed("mistral", "Mistral", window=True),
    _packed("mixtral", "Mixtral (MoE)", window=True),
    _packed("ministral3", "Ministral 3", window=True),
    _packed("qwen2", "Qwen2 / Qwen2.5", "by-layer-type"),
    _packed("qwen2_moe", "Qwen2-MoE", "by-layer-type"),
    _packed("qwen3", "Qwen3", "by-layer-type"),
    _packed("qwen3_moe", "Qwen3-MoE", window=True),
    _packed("gemma", "Gemma"),
    _packed("gemma2", "Gemma 2", "by-layer-type"),
    _packed("gemma3_text", "Gemma 3 (text)", "by-layer-type"),
    _refused("gemma3", "Gemma 3 (multimodal)", _MULTIMODAL, checked=False),
    _packed("vaultgemma", "VaultGemma", "by-layer-type"),
    _packed("phi", "Phi-1/2", note="partial rotary positions from position_ids, one causal mask"),
    _packed("phi3", "Phi-3", window=True),
    _packed("phimoe", "Phi-3.5-MoE", window=True),
    _packed("starcoder2", "StarCoder2", window=True),
    _packed("gpt_oss", "gpt-oss", "by-layer-type", note=_BY_TYPE + "; attention sinks as in TRL's layout"),
    _packed("gpt2", "GPT-2", note="learned absolute positions read at position_ids, one causal mask"),
    _packed("gpt_bigcode", "GPTBigCode (StarCoder 1)", note="learned absolute positions at position_ids"),
    _packed("gpt_neox", "GPT-NeoX / Pythia"),
    _packed("olmo", "OLMo"),
    _packed("olmo2", "OLMo 2"),
    _packed("olmo3", "OLMo 3", "by-layer-type"),
    _packed("olmoe", "OLMoE"),
    _packed("cohere", "Command R"),
    _packed("cohere2", "Command R7B / Command A", "by-layer-type"),
    _packed("granite", "Granite 3"),
    _packed("granitemoe", "Granite 3 MoE"),
    _packed("stablelm", "StableLM"),
    _packed("internlm3", "InternLM 3"),
    _packed("glm", "GLM"),
    _packed("glm4", "GLM-4"),
    _packed("exaone4", "EXAONE 4", "by-layer-type"),
    _packed("smollm3", "SmolLM3", "by-layer-type", note=_BY_TYPE + "; NoPE layers ignore positions"),
    _packed("seed_oss", "Seed-OSS"),
    _packed("ernie4_5", "ERNIE 4.5"),
    _packed("helium", "Helium"),
    _packed("persimmon", "Persimmon"),
    _packed("jetmoe", "JetMoE"),
    _packed("opt", "OPT", note="learned absolute positions at position_ids, one causal mask"),
    _packed(
        "falcon", "Falcon (rotary)", note="rotary positions, one causal mask; alibi: true in its config is refused"
    ),
    _packed("deepseek_v3", "DeepSeek-V3 / R1"),
    _refused("bloom", "BLOOM", _ALIBI + " (a prepared 4D mask fails in it)"),
    _refused("mpt", "MPT", _ALIBI),
    _packed("gptj", "GPT-J", note=_OWN_ATTENTION),
    _packed("codegen", "CodeGen", note=_OWN_ATTENTION),
    _packed("xglm", "XGLM", note=_OWN_ATTENTION + "; sinusoidal positions at position_ids"),
    _refused("gpt_neo", "GPT-Neo", _LOCAL_BY_COLUMN),
    _refused("llama4_text", "Llama 4", "chunked-attention layers: no packed mask builds their chunks", checked=False),
    _refused("mamba", "Mamba", _MIXING.format(what="state-space"), checked=False),
    _refused("mamba2", "Mamba-2", _MIXING.format(what="state-space")),
    _refused("jamba", "Jamba", _MIXING.format(what="state-space")),
    _refused("bamba", "Bamba", _MIXING.format(what="state-space")),
    _refused("falcon_h1", "Falcon-H1", _MIXING.format(what="state-space"), checked=False),
    _refused("zamba2", "Zamba2", _MIXING.format(what="state-space"), checked=False),
    _refused("granitemoehybrid", "Granite 4 (hybrid)", _MIXING.format(what="state-space")),
    _refused("nemotron_h", "Nemotron-H", _MIXING.format(what="state-space")),
    _refused("recurrent_gemma", "RecurrentGemma", _MIXING.format(what="recurrent")),
    _refused("rwkv", "RWKV", _MIXING.format(what="recurrent")),
    _refused("lfm2", "LFM2", _MIXING.format(what="convolution")),
    _refused("qwen3_next", "Qwen3-Next", _MIXING.format(what="linear-attention")),
    _refused("minimax", "MiniMax-Text", _MIXING.format(what="linear-attention")),
)

_BY_TYPE_NAME = {f.model_type: f for f in FAMILIES}


def family(model_type: str) -> Family | None:
    return _BY_TYPE_NAME.get(model_type)


def verdict(config: Any) -> Verdict:
    """Whether, and with which masks, prefix sharing packs a model with this (transformers) ``config``."""
    model_type = str(getattr(config, "model_type", ""))
    if getattr(config, "auto_map", None):
        return Verdict(None, f"model type {model_type!r} runs remote code (auto_map): its attention is not verified")
    fam = family(model_type)
    if fam is None:
        return Verdict(None, f"model family {model_type!r} is not verified for prefix sharing (docs/prefix-sharing.md)")
    if fam.masks is None:
        return Verdict(None, f"{fam.name}: {fam.note}")
    if getattr(config, "alibi", False):
        return Verdict(None, f"{fam.name} with alibi: true: {_ALIBI}")
    window = getattr(config, "sliding_window", None)
    if fam.masks == "one":
        return Verdict(MaskPlan(False, {"": window if fam.window else None}))
    return _by_layer_type(fam, config, window)


def _by_layer_type(fam: Family, config: Any, window: int | None) -> Verdict:
    types = set(getattr(config, "layer_types", None) or [FULL])
    unknown = sorted(types - {FULL, SLIDING})
    if unknown:
        return Verdict(None, f"{fam.name}: layer types {', '.join(unknown)} have no packed mask")
    if SLIDING in types and not isinstance(window, int):
        return Verdict(None, f"{fam.name}: sliding_attention layers without an integer config.sliding_window")
    return Verdict(MaskPlan(True, {t: (window if t == SLIDING else None) for t in sorted(types)}))
