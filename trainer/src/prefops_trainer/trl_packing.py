"""TRL's private API as prefix sharing uses it — the one place it does. Move into ``adapters/trl_bridge.py``.

What we rely on, checked at import so an upgrade that changes it fails here, naming it:

* ``trl.kernels.ChunkedLogProbFunction`` and ``trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE``: TRL's LM-head
  kernel (per-token log-probs, entropy, mean logit, top-1 without materializing the logits) and its tile width,
  so our head's numbers are TRL's own;
* ``trl.trainer.utils.maybe_gather_lm_head_ctx``: gathers a ZeRO-3-partitioned LM head for a direct use;
* ``DPOTrainer._compute_loss`` calls ``model(input_ids=, attention_mask=, use_cache=, labels=,
  fused_lm_head=True)`` on TRL's concatenated batch and reads ``log_probs``, ``entropy``, ``mean_logits``,
  ``is_top1`` and ``log_sum_sq_probs`` (each ``[2 * pairs, length - 1]``) from the result. :class:`PackedCall`
  answers that call from a packed forward, so TRL's loss code (every loss type, its metrics) runs unchanged.
"""

from __future__ import annotations

import inspect
import logging
import types
from dataclasses import dataclass

import torch
from trl.kernels import ChunkedLogProbFunction
from trl.trainer import dpo_trainer
from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE, maybe_gather_lm_head_ctx

from .compute import packing

log = logging.getLogger(__name__)

_CALL = "model(**model_kwargs, labels=labels, fused_lm_head=True)"
if _CALL not in inspect.getsource(dpo_trainer.DPOTrainer._compute_loss):
    raise ImportError(f"trl {dpo_trainer.__name__}: DPOTrainer._compute_loss no longer calls {_CALL}; prefix sharing")

#: The per-token fields TRL's DPO loss and metrics read (``log_sum_sq_probs`` only with ``use_weighting``).
DPO_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")
#: kwargs of TRL's policy call that a packed forward answers; any other (MoE router logits...) takes TRL's path.
PACKABLE = frozenset({"input_ids", "attention_mask", "use_cache", "labels", "fused_lm_head"})


def _logit_transform(model) -> tuple[float | None, float]:
    """(final logit softcap, logit scale) as ``trl.trainer.utils.add_fused_lm_head`` reads them from the config."""
    cfg = model.config.get_text_config()
    scale = getattr(cfg, "logit_scale", None)
    if scale is None:
        scale = getattr(cfg, "output_multiplier", None)
    if scale is None:
        scale = getattr(cfg, "lm_head_multiplier", None)
    if scale is None and getattr(cfg, "logits_scaling", None) is not None:
        scale = cfg.logits_scaling if cfg.model_type == "hyperclovax" else 1 / cfg.logits_scaling
    return getattr(cfg, "final_logit_softcapping", None), 1.0 if scale is None else scale


def lm_head(model, outputs: tuple[str, ...] = ("log_probs",)) -> packing.Head:
    """TRL's fused LM head as a function of (hidden states, targets): only the rows given are projected."""
    softcap, scale = _logit_transform(model)

    def head(hidden: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor | None]:
        lm = model.get_output_embeddings()
        with maybe_gather_lm_head_ctx(lm.weight, lm.bias):
            values = ChunkedLogProbFunction.apply(
                hidden.to(lm.weight.device), lm.weight, lm.bias, targets.to(lm.weight.device), 1.0,
                _CHUNKED_LOGPROB_CHUNK_SIZE, softcap, scale, outputs,
            )  # fmt: skip
        return dict(zip(("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1"), values, strict=True))

    return head


def install(model, outputs: tuple[str, ...]) -> None:
    """Let ``model`` (the unwrapped causal LM, under PEFT its base model) answer ``prefops_packed=(packed, mask)``
    with a packed forward; any other call goes to its current forward (TRL's fused head). Called through the
    wrapped model (DDP, DeepSpeed, PEFT pass the keyword on), so the wrappers' hooks run as for any forward."""
    if getattr(model, "_prefops_packing", False):
        return
    previous, head = model.forward, lm_head(model, outputs)

    def forward(self, *args, prefops_packed=None, **kwargs):
        if prefops_packed is None:
            return previous(*args, **kwargs)
        packed, mask = prefops_packed
        return packing.forward(self.base_model, packed, mask, head)

    model.forward = types.MethodType(forward, model)
    model._prefops_packing = True


@dataclass
class PackedOutput:
    """The fields of TRL's ``FusedCausalLMOutput`` its DPO loss reads, in its concatenated layout."""

    log_probs: torch.Tensor
    entropy: torch.Tensor | None = None
    log_sum_sq_probs: torch.Tensor | None = None
    mean_logits: torch.Tensor | None = None
    is_top1: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None


class PackedCall:
    """Stands in for the model inside ``DPOTrainer._compute_loss``: the policy call on the concatenated batch runs
    as one packed forward; every other call (and a batch whose pairs do not share a prompt) goes to the model."""

    def __init__(self, model, attn_implementation: str, dtype: torch.dtype) -> None:
        self.model, self.attn, self.dtype = model, attn_implementation, dtype
        self.packed_calls = 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, *args, **kwargs):
        if args or not kwargs.get("fused_lm_head") or not set(kwargs) <= PACKABLE:
            return self.model(*args, **kwargs)
        ids, labels = kwargs["input_ids"], kwargs["labels"]
        pairs = packing.unpack_concatenated(ids, kwargs["attention_mask"], labels)
        if pairs is None:
            return self.model(*args, **kwargs)
        packed = packing.pack(pairs, pad_token_id=0).to(ids.device)
        fields = self.model(prefops_packed=(packed, packing.attention_mask(packed, self.attn, self.dtype)))
        self.packed_calls += 1
        width = ids.size(1) - 1
        return PackedOutput(**{k: packing.to_concatenated(v, packed, width) for k, v in fields.items()})


def enable(trainer):
    """Install the packed forward on a ``DPOTrainer``'s model; return ``model -> PackedCall(model)`` for its
    ``compute_loss``, or None (logged) when the model's attention kernel takes no custom mask."""
    model = trainer.model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    attn = base.config._attn_implementation
    if not packing.supported(attn):
        log.info("prefix sharing off: attention kernel %s takes no custom mask (use sdpa or flex_attention)", attn)
        return None
    install(base, DPO_OUTPUTS + (("log_sum_sq_probs",) if trainer.use_weighting else ()))
    return lambda wrapped: PackedCall(wrapped, attn, base.dtype)
