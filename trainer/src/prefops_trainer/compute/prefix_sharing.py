"""Prefix sharing inside TRL's DPO loss: its policy forward on the concatenated batch, answered packed.

``DPOTrainer``'s loss calls its model once per micro-batch on the pairs laid out as two sequences each. Here that
call is answered by one packed forward (:mod:`.packing`) whose per-token results are laid back out where TRL reads
them, so TRL's own loss code (every loss type, its weighting, its metrics) runs unchanged on top. The TRL-private
parts (which call to answer, the LM-head kernel, the output type) come from the TRL bridge.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..adapters import trl_bridge
from ..core.prefix_families import MaskPlan, Verdict, verdict
from . import packing

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


def install(model: PreTrainedModel, outputs: tuple[str, ...]) -> None:
    """Let ``model`` (the causal LM itself; under PEFT, its base model) answer ``prefops_packed=(packed, mask)``
    with a packed forward and TRL's LM head at the scored positions; any other call goes to its current forward.

    The call still goes through whatever wraps the model (DDP, DeepSpeed, PEFT pass the keyword on), so their
    hooks run as for any forward."""
    if getattr(model, "_prefops_packing", False):
        return
    previous, head = model.forward, trl_bridge.lm_head(model, outputs)

    def forward(self: Any, *args: Any, prefops_packed: Any = None, **kwargs: Any) -> Any:
        if prefops_packed is None:
            return previous(*args, **kwargs)
        packed, mask = prefops_packed
        return packing.forward(self.base_model, packed, mask, head)

    model.forward = types.MethodType(forward, model)
    setattr(model, "_prefops_packing", True)  # noqa: B010 - an attribute of our own on a torch module


class PackedCall:
    """Stands in for the model inside ``DPOTrainer``'s loss: the policy call on the concatenated batch runs as one
    packed forward; every other call (and a batch whose pairs do not share a prompt) goes to the model."""

    def __init__(self, model: Any, attn_implementation: str, dtype: torch.dtype, plan: MaskPlan | None = None) -> None:
        self.model, self.attn, self.dtype, self.plan = model, attn_implementation, dtype, plan
        self.packed_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        call = trl_bridge.dpo_policy_call(args, kwargs)
        pairs = packing.unpack_concatenated(*call) if call is not None else None
        if call is None or pairs is None:
            return self.model(*args, **kwargs)
        input_ids = call[0]
        packed = packing.pack(pairs, pad_token_id=0).to(input_ids.device)
        mask = packing.attention_mask(packed, self.attn, self.dtype, self.plan)
        fields = self.model(prefops_packed=(packed, mask))
        self.packed_calls += 1
        width = input_ids.size(1) - 1
        return trl_bridge.fused_output({k: packing.to_concatenated(v, packed, width) for k, v in fields.items()})


def decide(model: PreTrainedModel) -> Verdict:
    """Whether ``model`` (the causal LM; under PEFT, its base model) runs packed: its family (and config) by
    :func:`~prefops_trainer.core.prefix_families.verdict`, and an attention kernel that takes a custom mask."""
    family = verdict(model.config)
    attn = model.config._attn_implementation
    if family.plan is None:
        return family
    if not packing.supported(attn):
        return Verdict(None, f"attention kernel {attn} takes no custom mask (use sdpa, eager or flex_attention)")
    problem = trl_bridge.masks_by_layer_type_problem(model.base_model) if family.plan.by_layer_type else None
    return family if problem is None else Verdict(None, problem)


def base_model(model: Any) -> PreTrainedModel:
    """The causal LM inside a PEFT model (or the model itself)."""
    base: PreTrainedModel = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base


def enable(trainer: Any) -> Callable[[Any], PackedCall] | None:
    """Install the packed forward on a ``DPOTrainer``'s model; return the wrapper for its loss's model calls, or
    None (and why, in the log) when :func:`decide` keeps the pairs in TRL's layout."""
    base = base_model(trainer.model)
    decision = decide(base)
    log.info("prefix sharing %s", decision.status)
    if decision.plan is None:
        return None
    install(base, trl_bridge.dpo_policy_outputs(trainer))
    attn, plan = base.config._attn_implementation, decision.plan
    return lambda wrapped: PackedCall(wrapped, attn, base.dtype, plan)
