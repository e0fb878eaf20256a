"""The job's mistakes only the machine or the model can show: checks made once the model folder is at hand, before
anything is loaded or computed. Pure: the facts come in as values.

What "a device without bf16" means here: a CUDA GPU that cannot compute in bfloat16 (``torch.cuda.
is_bf16_supported()`` is false: before Ampere, e.g. V100, T4). On a CPU, torch computes in bfloat16 (slowly), so
``dtype: bfloat16`` there is allowed; ``auto`` never asks for what the machine lacks.
"""

from __future__ import annotations

from dataclasses import dataclass

from .spec import JobSpec


@dataclass(frozen=True)
class Machine:
    """What this machine offers the trainer.

    Attributes:
        cuda: a CUDA GPU is visible.
        bf16: that GPU computes in bfloat16 (meaningless without CUDA).
        flash_attn: the ``flash_attn`` package is installed.
    """

    cuda: bool
    bf16: bool
    flash_attn: bool

    @property
    def device(self) -> str:
        return "this GPU" if self.cuda else "this machine (no GPU)"


def auto_attention(machine: Machine, packs_pairs: bool) -> str | None:
    """The kernel ``model.attnImplementation: auto`` means here. On CUDA, when training packs pairs (prefix sharing
    on a model family it packs), flex_attention: its block mask takes the packed layout natively and skips the fully
    masked blocks (flash-attention 2 takes no custom mask, so it would turn prefix sharing off; sdpa with a custom
    mask leaves flash kernels for a masked one). Otherwise flash_attention_2 where the package is installed, and
    elsewhere None: transformers' own default, sdpa where the family has it, else eager (flex attention has no CPU
    backward)."""
    if machine.cuda and packs_pairs:
        return "flex_attention"
    return "flash_attention_2" if machine.cuda and machine.flash_attn else None


def problems(spec: JobSpec, machine: Machine, context: int | None, config: str) -> list[str]:
    """One paragraph per mistake, naming the field. ``context``: the model's ``max_position_embeddings`` (None when
    its config does not say), read from ``config``."""
    return [*_attention(spec, machine), *_bf16(spec, machine), *_length(spec, context, config)]


def _attention(spec: JobSpec, machine: Machine) -> list[str]:
    if spec.model.attn_implementation != "flash_attention_2" or (machine.cuda and machine.flash_attn):
        return []
    missing = [what for what, ok in (("the flash-attn package", machine.flash_attn), ("a CUDA GPU", machine.cuda))
               if not ok]  # fmt: skip
    return [
        f"spec.model.attnImplementation: flash_attention_2 needs the flash-attn package and a CUDA GPU, and "
        f"{machine.device} lacks {' and '.join(missing)}. Use sdpa, or auto (flash_attention_2 where it is "
        "available, sdpa elsewhere), or run an image with flash-attn on GPU nodes"
    ]


def _bf16(spec: JobSpec, machine: Machine) -> list[str]:
    if not machine.cuda or machine.bf16:
        return []
    fields = [f for f, dtype in (("spec.model.dtype", spec.model.dtype),
                                 ("spec.rewardModel.dtype", spec.reward_model.dtype if spec.reward_model else None))
              if dtype == "bfloat16"]  # fmt: skip
    return [
        f"{field}: bfloat16 asked, but this GPU cannot compute in bfloat16 (it predates Ampere). Use float16 or "
        "float32, or auto (bfloat16 where the GPU supports it, else float32), or schedule the job on newer GPUs"
        for field in fields
    ]


def _length(spec: JobSpec, context: int | None, config: str) -> list[str]:
    max_length = spec.dataset.max_length
    if context is None or max_length <= context:
        return []
    return [
        f"spec.dataset.maxLength: {max_length} is more than the model's context of {context} tokens "
        f"(max_position_embeddings in {config}); positions beyond it were never trained. Set maxLength to at "
        f"most {context}"
    ]
