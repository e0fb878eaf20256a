"""Load the model and tokenizer the spec names, with the dtype and attention kernel resolved for this machine."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.spec import ModelSpec, RewardModelSpec
from .sources import local_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: Files that describe a model but do not change its numbers.
IGNORED_FILES = {"README.md", ".gitattributes", "prefops.json", "training_args.bin"}


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_dtype(spec: ModelSpec | RewardModelSpec) -> str:
    """``auto`` is bfloat16 on a GPU that supports it, float32 otherwise (CPU training in bf16 is slow)."""
    if spec.dtype != "auto":
        return spec.dtype
    import torch

    return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"


def resolve_attn(spec: ModelSpec) -> str:
    """``auto`` is flash_attention_2 when the ``flash_attn`` package is installed and CUDA is present, else sdpa."""
    if spec.attn_implementation != "auto":
        return spec.attn_implementation
    if cuda_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def model_dir(spec: ModelSpec | RewardModelSpec, field: str = "spec.model.source") -> Path:
    """The local folder of a model spec (``spec.model`` or ``spec.rewardModel``)."""
    return local_model(spec.source, spec.revision, field)


def model_init_kwargs(policy: ModelSpec, weights: ModelSpec | RewardModelSpec | None = None) -> dict[str, Any]:
    """``from_pretrained`` arguments for ``weights`` (default: the policy model itself): its own dtype, and the
    policy's attention and remote-code settings (a reward model has none of its own)."""
    import torch

    return {
        "dtype": getattr(torch, resolve_dtype(weights or policy)),
        "attn_implementation": resolve_attn(policy),
        "trust_remote_code": policy.trust_remote_code,
    }


def load_model(spec: ModelSpec, path: Path) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(path, **model_init_kwargs(spec))
    return model


def load_tokenizer(path: Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer saved with the model; a missing pad token falls back to EOS, as TRL's trainers do."""
    from transformers import AutoTokenizer

    tok: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def hash_files(path: Path) -> dict[str, str]:
    """sha256 of every file in a model folder (weights, config, tokenizer, chat template), by relative path."""
    out = {}
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if f.name in IGNORED_FILES or rel.startswith(".") or "/." in rel:
            continue
        h = hashlib.sha256()
        with f.open("rb") as fh:
            while chunk := fh.read(8 * 2**20):
                h.update(chunk)
        out[rel] = h.hexdigest()
    return out
