"""Load the model and tokenizer the spec names, with the dtype and attention kernel resolved for this machine."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from ..core.errors import SpecError
from ..core.hardware import Machine, auto_attention, problems
from ..core.spec import JobSpec, ModelSpec, RewardModelSpec
from . import chat_template
from .sources import local_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

#: Files that describe a model but do not change its numbers.
IGNORED_FILES = {"README.md", ".gitattributes", "prefops.json", "training_args.bin"}


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def this_machine() -> Machine:
    import torch

    cuda = torch.cuda.is_available()
    return Machine(cuda, cuda and torch.cuda.is_bf16_supported(), importlib.util.find_spec("flash_attn") is not None)


def context_length(path: Path) -> int | None:
    """The model's ``max_position_embeddings`` (its text config's, for a multimodal model), if its config says."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for part in (config, config.get("text_config") or {}):
        value = part.get("max_position_embeddings") if isinstance(part, dict) else None
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_fits(spec: JobSpec, path: Path) -> None:
    """Raise :class:`SpecError` for what the spec asks and this machine or the model at ``path`` cannot give."""
    found = problems(spec, this_machine(), context_length(path), f"{spec.model.source.as_written}/config.json")
    if found:
        raise SpecError("; ".join(found))


def resolve_dtype(spec: ModelSpec | RewardModelSpec) -> str:
    """``auto`` is bfloat16 on a GPU that supports it, float32 otherwise (CPU training in bf16 is slow)."""
    if spec.dtype != "auto":
        return spec.dtype
    import torch

    return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"


def resolve_attn(spec: ModelSpec, packs_pairs: bool = False) -> str | None:
    """``auto``: the kernel :func:`~prefops_trainer.core.hardware.auto_attention` picks on this machine (with
    ``packs_pairs``: training packs pairs, so a kernel that takes the packed mask); None: transformers' default."""
    if spec.attn_implementation != "auto":
        return spec.attn_implementation
    return auto_attention(this_machine(), packs_pairs)


def config_json(path: Path) -> SimpleNamespace:
    """The model's ``config.json`` as attributes (no model code runs), for the family checks."""
    try:
        doc = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        doc = {}
    return SimpleNamespace(**doc) if isinstance(doc, dict) else SimpleNamespace()


def model_dir(spec: ModelSpec | RewardModelSpec, field: str = "spec.model.source") -> Path:
    """The local folder of a model spec (``spec.model`` or ``spec.rewardModel``)."""
    return local_model(spec.source, spec.revision, field)


def model_init_kwargs(
    policy: ModelSpec, weights: ModelSpec | RewardModelSpec | None = None, packs_pairs: bool = False
) -> dict[str, Any]:
    """``from_pretrained`` arguments for ``weights`` (default: the policy model itself): its own dtype and its own
    ``trustRemoteCode`` (trusting the policy's code never trusts a reward model's), the policy's attention kernel
    (``packs_pairs``: see :func:`resolve_attn`)."""
    import torch

    own = weights or policy
    return {
        "dtype": getattr(torch, resolve_dtype(own)),
        "attn_implementation": resolve_attn(policy, packs_pairs),
        "trust_remote_code": own.trust_remote_code,
    }


def load_model(spec: ModelSpec, path: Path, packs_pairs: bool = False) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    kwargs = model_init_kwargs(spec, packs_pairs=packs_pairs)
    try:
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except ValueError as e:  # the kernel auto picked is one this model family lacks
        if spec.attn_implementation != "auto" or kwargs["attn_implementation"] is None:
            raise
        log.warning("model.attnImplementation auto: %s; the model's default kernel instead", e)
        model = AutoModelForCausalLM.from_pretrained(path, **(kwargs | {"attn_implementation": None}))
    return model


def load_tokenizer(path: Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer saved with the model; a missing pad token falls back to EOS, as TRL's trainers do; its chat
    template renders under a time limit (:mod:`.chat_template`)."""
    from transformers import AutoTokenizer

    tok: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    chat_template.bound(tok, path)
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
