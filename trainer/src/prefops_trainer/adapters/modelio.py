"""Load the model and tokenizer the spec names, with the dtype and attention kernel resolved for this machine."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from pathlib import Path

from ..core.spec import ModelSpec
from .sources import local_model

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
#: Files that describe a model but do not change its numbers.
IGNORED_FILES = {"README.md", ".gitattributes", "prefops.json", "training_args.bin"}


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_dtype(spec) -> str:
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


def model_dir(spec, field: str = "spec.model.source") -> Path:
    """The local folder of a model spec (``spec.model`` or ``spec.rewardModel``)."""
    return local_model(spec.source, spec.revision, field)


def model_init_kwargs(spec, attn: ModelSpec | None = None) -> dict:
    """``from_pretrained`` arguments for ``spec``; attention and remote-code settings come from ``attn`` (the
    policy's model spec) when ``spec`` has none of its own (a reward model)."""
    import torch

    base = attn or spec
    return {
        "dtype": getattr(torch, resolve_dtype(spec)),
        "attn_implementation": resolve_attn(base),
        "trust_remote_code": base.trust_remote_code,
    }


def load_model(spec: ModelSpec, path: Path | None = None):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path or model_dir(spec), **model_init_kwargs(spec))


def load_tokenizer(path: Path, trust_remote_code: bool = False):
    """The tokenizer saved with the model; a missing pad token falls back to EOS, as TRL's trainers do."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
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
