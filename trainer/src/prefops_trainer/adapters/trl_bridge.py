"""The one door to TRL's non-public API.

Everywhere else the trainer uses TRL's public trainers and configs only. Where prefops needs more (tokenizing
exactly as a trainer does, joining our reference cache into a trainer, TRL's fused LM head), it comes here, so a
TRL upgrade that moves one of these pieces breaks this module, at import, with a message naming the TRL version
and the piece, instead of three modules silently. :data:`RELIES_ON` lists every piece with why we need it;
:func:`check` runs when this module is imported. What a signature cannot show (the shape of a returned tuple,
the attributes a private method reads from its stand-in ``self``) is checked where it is used, with the same
kind of error, and ``tests/trainer/test_trl_bridge.py`` exercises each piece against the installed TRL.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import trl

from . import zero3

if TYPE_CHECKING:
    import torch
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .refcache import RefTable

#: The TRL release this module was written against (constraints.txt pins it; a test keeps the two equal).
TESTED_WITH = "1.16.0"


class TrlBoundaryError(RuntimeError):
    """The installed TRL lacks, or changed, a non-public piece prefops relies on."""


@dataclass(frozen=True)
class Reliance:
    """One non-public TRL name prefops uses.

    Attributes:
        module: the module that defines it (or, for ``hash_module``, the module whose global we replace).
        name: the name inside ``module``; ``Class.method`` for a method.
        params: the leading parameter names its signature must have, in order.
        why: what prefops uses it for.
    """

    module: str
    name: str
    params: tuple[str, ...]
    why: str


_DPO, _KTO = "trl.trainer.dpo_trainer", "trl.trainer.kto_trainer"
_KERNEL = "trl.kernels.chunked_logprob"
_ONLINE = "trl.experimental.online_dpo.online_dpo_trainer"
_UTILS = "trl.trainer.utils"
_MASKS = "transformers.masking_utils"
_HF_TRAINER = "transformers.trainer"
_PREPARE = ("self", "dataset", "processing_class", "args", "dataset_name")
_PRECOMPUTE = ("self", "dataset", "name", "batch_size")
_KERNEL_PARAMS = ("ctx", "hidden", "weight", "bias", "targets", "temperature", "chunk_size")

RELIES_ON: tuple[Reliance, ...] = (
    Reliance(
        _DPO,
        "DPOTrainer._prepare_dataset",
        _PREPARE,
        "tokenize pairs exactly as DPOTrainer does (prompt extraction, EOS, chat template, prompt/completion split), "
        "called on a stand-in self, so precomputed reference log-probs equal TRL's; and overridden: a split that "
        "arrives tokenized by it (the reference cache's tokens: prompt_ids, chosen_ids, rejected_ids, no prompt) is "
        "used as it is, since its output is what the rest of DPOTrainer reads",
    ),
    Reliance(
        _KTO,
        "KTOTrainer._prepare_dataset",
        _PREPARE,
        "the same for KTO, KL completions included (the completions rotated by one in each training batch); and "
        "overridden alike: a split of prompt_ids, completion_ids, KL_completion_ids and label, no prompt, is used as "
        "it is (this skips only its warning on unbalanced desirable and undesirable weights)",
    ),
    Reliance(_DPO, "DPOTrainer._precompute_ref_logps", _PRECOMPUTE, "overridden: a join with our reference cache"),
    Reliance(_KTO, "KTOTrainer._precompute_ref_logps", _PRECOMPUTE, "overridden: a join with our reference cache"),
    Reliance(
        _DPO,
        "hash_module",
        ("module",),
        "replaced while DPOTrainer starts: it hashes every weight to key the precompute cache that ours replaces",
    ),
    Reliance(_KTO, "hash_module", ("module",), "replaced while KTOTrainer starts, as for DPO"),
    Reliance(
        _ONLINE,
        "OnlineDPOTrainer._generate",
        ("self", "model", "prompts", "images"),
        "wrapped to count generated tokens and log their mean length; it returns (prompt_ids, prompt_mask, "
        "completion_ids, completion_mask, vision inputs), read by generated_masks",
    ),
    Reliance(
        _UTILS,
        "add_fused_lm_head",
        ("model", "temperature", "cast_lm_head_to_fp32", "outputs"),
        "reference log-probs through TRL's own LM-head kernel: model(..., fused_lm_head=True).log_probs",
    ),
    Reliance(_UTILS, "FusedCausalLMOutput", ("loss", "log_probs"), "what the fused head returns"),
    Reliance(
        _DPO,
        "DataCollatorForPreference",
        ("pad_token_id", "max_length", "truncation_mode"),
        "pad and truncate pairs exactly as DPOTrainer's collator does",
    ),
    Reliance(
        _KERNEL,
        "ChunkedLogProbFunction",
        (),  # an autograd Function: its forward's parameters are checked below, after the imports
        "prefix sharing: TRL's LM-head kernel (log-probs, entropy, mean logit, top-1 without the logits) on the "
        "completion positions we gather, with TRL's tile width (_CHUNKED_LOGPROB_CHUNK_SIZE): TRL's numbers",
    ),
    Reliance(_UTILS, "maybe_gather_lm_head_ctx", ("params",), "gather a ZeRO-3-partitioned LM head for that kernel"),
    Reliance(
        _MASKS,
        "_preprocess_mask_arguments",
        ("config", "inputs_embeds", "attention_mask"),
        "prefix sharing: a prepared 4D mask (our packed one) is used as given, by every layer that reads it",
    ),
    Reliance(
        _MASKS,
        "sliding_window_overlay",
        ("sliding_window",),
        "prefix sharing: the window rule a sliding-window layer applies in TRL's layout (a query sees keys fewer "
        "than sliding_window positions back), which the packed mask of such a layer copies",
    ),
    Reliance(
        _DPO,
        "DPOTrainer._compute_loss",
        ("self", "model", "inputs", "return_outputs"),
        "prefix sharing answers its policy call, model(input_ids=, attention_mask=, use_cache=, labels=, "
        "fused_lm_head=True) on the concatenated batch, with a packed forward; it reads log_probs, entropy, "
        "mean_logits, is_top1 and log_sum_sq_probs, each [2 x pairs, length - 1]",
    ),
    Reliance(
        _HF_TRAINER,
        "Trainer._save",
        ("self", "output_dir", "state_dict"),
        "a LoRA job under ZeRO-3 saves its adapter from the adapter's parameters alone gathered, through the "
        "Trainer's own save (peft's save_pretrained(state_dict=), the tokenizer, the arguments), as transformers' "
        "save_model does for a peft model",
    ),
    Reliance(
        _HF_TRAINER,
        "Trainer._get_train_sampler",
        ("self", "train_dataset"),
        "overridden for training.groupByLength: transformers' LengthGroupedSampler over the lengths of the rows' "
        "token columns, since TRL's tokenized datasets carry no length column and the Trainer drops unused columns "
        "before it builds the sampler",
    ),
)


def _problem(reliance: Reliance) -> str | None:
    """What is wrong with ``reliance`` in the installed TRL, or None."""
    try:
        obj: Any = importlib.import_module(reliance.module)
        for part in reliance.name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        return f"{reliance.module}.{reliance.name} is gone ({e})"
    params = tuple(inspect.signature(obj).parameters)
    if params[: len(reliance.params)] != reliance.params:
        expected = ", ".join(reliance.params)
        return f"{reliance.module}.{reliance.name} takes ({', '.join(params)}), expected ({expected}, ...)"
    return None


def _error(what: str) -> TrlBoundaryError:
    if what.startswith("transformers."):
        what = f"transformers {_transformers_version()}: {what}"
    return TrlBoundaryError(
        f"TRL {trl.__version__}: {what}. prefops_trainer.adapters.trl_bridge was written against TRL {TESTED_WITH} "
        "(constraints.txt); install that version, or adapt the bridge to this one"
    )


def _transformers_version() -> str:
    import transformers

    return str(transformers.__version__)


def check(relies_on: tuple[Reliance, ...] = RELIES_ON) -> None:
    """Raise :class:`TrlBoundaryError` naming every piece of ``relies_on`` the installed TRL lacks or changed."""
    problems = [p for p in map(_problem, relies_on) if p is not None]
    if problems:
        raise _error("; ".join(problems))


check()

from trl.kernels.chunked_logprob import TOKEN_CHUNK_SIZE, ChunkedLogProbFunction  # noqa: E402 - after the check
from trl.trainer import utils as _trl_utils  # noqa: E402
from trl.trainer.dpo_trainer import DataCollatorForPreference, DPOTrainer  # noqa: E402
from trl.trainer.kto_trainer import KTOTrainer  # noqa: E402
from trl.trainer.utils import FusedCausalLMOutput, maybe_gather_lm_head_ctx  # noqa: E402
from trl.trainer.utils import add_fused_lm_head as _add_fused_lm_head  # noqa: E402

#: The policy call in ``DPOTrainer._compute_loss`` that prefix sharing answers (see :data:`RELIES_ON`).
_POLICY_CALL = "model(**model_kwargs, labels=labels, fused_lm_head=True)"
if _POLICY_CALL not in inspect.getsource(DPOTrainer._compute_loss):
    raise _error(f"DPOTrainer._compute_loss no longer makes the policy call {_POLICY_CALL}")
if tuple(inspect.signature(ChunkedLogProbFunction.forward).parameters)[: len(_KERNEL_PARAMS)] != _KERNEL_PARAMS:
    raise _error(f"ChunkedLogProbFunction.forward no longer takes ({', '.join(_KERNEL_PARAMS)}, ...)")
_WINDOW_RULE = "kv_idx > q_idx - sliding_window"
if _WINDOW_RULE not in inspect.getsource(importlib.import_module(_MASKS).sliding_window_overlay):
    raise _error(f"{_MASKS}.sliding_window_overlay no longer has the rule {_WINDOW_RULE}")
_CHUNK = getattr(_trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE", None)
if not isinstance(_CHUNK, int):
    raise _error("trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE (the LM-head kernel's tile width) is gone")

# -- tokenization as the trainers do it ---------------------------------------------------------------------------


def trainer_classes(module: str, config: str, trainer: str) -> tuple[type[Any], type[Any]]:
    """(config class, trainer class) of a TRL module the algorithm table names (``core.trlconfig``): imported here,
    where the import contracts see every use of TRL, and only from TRL itself."""
    if module != "trl" and not module.startswith("trl."):
        raise ValueError(f"the algorithm table names {module!r}, which is not a TRL module")
    loaded = importlib.import_module(module)
    return getattr(loaded, config), getattr(loaded, trainer)


def call_with_stand_in(method: Callable[..., Any], stand_in: SimpleNamespace, *call_args: Any) -> Any:
    """``method(stand_in, *call_args)``: a private trainer method called on a stand-in ``self`` (and, among
    ``call_args``, stand-in ``args``) holding only what it reads; a read of anything else fails naming TRL's version
    and the attribute."""
    stand_ins = {id(stand_in): "self"} | {id(a): "args" for a in call_args if isinstance(a, SimpleNamespace)}
    try:
        return method(stand_in, *call_args)
    except AttributeError as e:
        if id(e.obj) in stand_ins:
            raise _error(
                f"{method.__qualname__} reads {stand_ins[id(e.obj)]}.{e.name}, which prefops' stand-in lacks"
            ) from e
        raise


def _require_columns(rows: Dataset, columns: tuple[str, ...], where: str) -> Dataset:
    missing = [c for c in columns if c not in rows.column_names]
    if missing:
        raise _error(f"{where} no longer returns the columns {', '.join(missing)} (it returns {rows.column_names})")
    return rows


def prepare_pairs(rows: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int, truncation_mode: str) -> Dataset:
    """Paired rows tokenized as ``DPOTrainer`` does: ``prompt_ids``, ``chosen_ids``, ``rejected_ids`` added.
    TRL drops rows whose prompt alone fills ``max_length``."""
    stand_in = SimpleNamespace(_tokenizer=tokenizer)
    args = SimpleNamespace(dataset_num_proc=None, max_length=max_length, truncation_mode=truncation_mode)
    out = call_with_stand_in(DPOTrainer._prepare_dataset, stand_in, rows, tokenizer, args, "train")
    return _require_columns(out, ("prompt_ids", "chosen_ids", "rejected_ids"), "DPOTrainer._prepare_dataset")


def prepare_unpaired(
    rows: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int, batch_size: int, calculate_kl: bool
) -> Dataset:
    """Unpaired rows tokenized as ``KTOTrainer`` does: ``prompt_ids``, ``completion_ids`` and, with
    ``calculate_kl``, ``KL_completion_ids`` (the completions rotated by one within each batch of ``batch_size``)."""
    stand_in = SimpleNamespace(
        _tokenizer=tokenizer, calculate_KL=calculate_kl, desirable_weight=1.0, undesirable_weight=1.0
    )
    args = SimpleNamespace(dataset_num_proc=None, max_length=max_length, per_device_train_batch_size=batch_size)
    out = call_with_stand_in(KTOTrainer._prepare_dataset, stand_in, rows, tokenizer, args, "prefops")
    columns = ("prompt_ids", "completion_ids", *(("KL_completion_ids",) if calculate_kl else ()))
    return _require_columns(out, columns, "KTOTrainer._prepare_dataset")


# -- TRL's fused LM head and preference collator ------------------------------------------------------------------


#: The models that carry TRL's fused LM head now.
_fused: weakref.WeakSet[PreTrainedModel] = weakref.WeakSet()


def attach_fused_head(model: PreTrainedModel) -> None:
    """Give ``model`` TRL's fused LM head (once): :func:`fused_log_probs` then scores completion tokens only."""
    if model not in _fused:
        _add_fused_lm_head(model)
        _fused.add(model)


def detach_fused_head(model: PreTrainedModel) -> None:
    """Undo :func:`attach_fused_head` (the patched forward is an instance attribute over the class's own)."""
    if model in _fused:
        del model.forward
        _fused.discard(model)


def fused_log_probs(model: PreTrainedModel, **inputs: Any) -> torch.Tensor:
    """Per-token log-probs of the positions whose ``labels`` are not -100, from a model with the fused head."""
    log_probs: torch.Tensor = model(**inputs, fused_lm_head=True).log_probs
    return log_probs


def _logit_transform(model: PreTrainedModel) -> tuple[float | None, float]:
    """(final logit softcap, logit scale) read from the config as ``add_fused_lm_head`` reads them."""
    cfg = model.config.get_text_config()
    scale = getattr(cfg, "logit_scale", None)
    if scale is None:
        scale = getattr(cfg, "output_multiplier", None)
    if scale is None:
        scale = getattr(cfg, "lm_head_multiplier", None)
    if scale is None and getattr(cfg, "logits_scaling", None) is not None:
        scale = cfg.logits_scaling if cfg.model_type == "hyperclovax" else 1 / cfg.logits_scaling
    return getattr(cfg, "final_logit_softcapping", None), 1.0 if scale is None else scale


#: The per-token fields TRL's LM-head kernel returns, in its order.
HEAD_FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def lm_head(
    model: PreTrainedModel, outputs: tuple[str, ...] = ("log_probs",)
) -> Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor | None]]:
    """TRL's fused LM head as a function of (hidden states [N, H], target ids [N]): only the rows given are
    projected (in tiles, without the logits); returns :data:`HEAD_FIELDS` (those not in ``outputs``: None)."""
    softcap, scale = _logit_transform(model)

    def head(hidden: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor | None]:
        lm = model.get_output_embeddings()
        with maybe_gather_lm_head_ctx(lm.weight, lm.bias):
            values = ChunkedLogProbFunction.apply(  # type: ignore[no-untyped-call]
                hidden.to(lm.weight.device), lm.weight, lm.bias, targets.to(lm.weight.device), 1.0, _CHUNK,
                softcap, scale, outputs,
            )  # fmt: skip
        return dict(zip(HEAD_FIELDS, values, strict=True))

    return head


#: How a transformers model whose layers differ (sliding and full attention) takes prepared masks: its backbone's
#: forward uses a dict passed as ``attention_mask`` as its {layer type: mask} mapping, as given.
_MASK_MAPPING = "isinstance(causal_mask_mapping := attention_mask, dict)"


def masks_by_layer_type_problem(backbone: Any) -> str | None:
    """None when ``backbone`` (a transformers base model) takes ``attention_mask={layer type: mask}`` as its mask
    mapping (read in its forward's source); else what is wrong, naming transformers' version and the class."""
    forward = type(backbone).forward
    try:
        source = inspect.getsource(forward)
    except (OSError, TypeError):
        source = ""
    if _MASK_MAPPING in source:
        return None
    return (
        f"transformers {_transformers_version()}: {type(backbone).__name__}.forward does not take "
        "{layer type: mask} as its attention mask"
    )


def head_kernel(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, outputs: tuple[str, ...] = ("log_probs",)
) -> tuple[torch.Tensor | None, ...]:
    """TRL's LM-head kernel alone: the per-token :data:`HEAD_FIELDS` of ``hidden`` [N, H] projected by ``weight``
    [V, H] at ``targets`` [N], with TRL's tile width (no bias, temperature 1, no softcap)."""
    values: tuple[torch.Tensor | None, ...] = ChunkedLogProbFunction.apply(  # type: ignore[no-untyped-call]
        hidden, weight, None, targets, 1.0, _CHUNK, None, 1.0, outputs
    )
    return values


def head_kernel_function() -> Any:
    """TRL's LM-head kernel itself (an autograd Function), for tools that instrument it (``bench/planner.py``)."""
    return ChunkedLogProbFunction


def head_tile() -> tuple[int, int]:
    """(positions, vocabulary entries) of one tile of TRL's LM-head kernel: what the memory planner sizes the
    head's working set by (``core.planner.terms``; a test holds them equal)."""
    assert isinstance(_CHUNK, int), "checked at import"
    return TOKEN_CHUNK_SIZE, _CHUNK


def dpo_policy_outputs(trainer: Any) -> tuple[str, ...]:
    """The per-token fields ``DPOTrainer``'s loss and metrics read from its policy's output."""
    return ("log_probs", "entropy", "mean_logits", "is_top1") + (("log_sum_sq_probs",) if trainer.use_weighting else ())


#: The keywords of ``DPOTrainer._compute_loss``'s policy call; any other (MoE router logits, vision inputs) means a
#: call prefix sharing leaves to the model.
_POLICY_KWARGS = frozenset({"input_ids", "attention_mask", "use_cache", "labels", "fused_lm_head"})


def dpo_policy_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, Any] | None:
    """(input_ids, attention_mask, labels) when ``model(*args, **kwargs)`` is ``DPOTrainer``'s policy call on its
    concatenated batch (chosen rows, then rejected; labels -100 outside the completions), else None."""
    if args or not kwargs.get("fused_lm_head") or not set(kwargs) <= _POLICY_KWARGS:
        return None
    return kwargs["input_ids"], kwargs["attention_mask"], kwargs["labels"]


def fused_output(fields: dict[str, torch.Tensor | None]) -> Any:
    """What the fused head returns (``FusedCausalLMOutput``), from per-token fields in its layout."""
    return FusedCausalLMOutput(**{k: v for k, v in fields.items() if k in HEAD_FIELDS})


def preference_collator(pad_token_id: int, max_length: int | None, truncation_mode: str) -> Callable[..., Any]:
    """``DPOTrainer``'s collator: pads and truncates ``prompt_ids``/``chosen_ids``/``rejected_ids`` into one batch
    (chosen rows first, then rejected) with ``input_ids``, ``attention_mask`` and ``completion_mask``."""
    collate: Callable[..., Any] = DataCollatorForPreference(
        pad_token_id=pad_token_id, max_length=max_length, truncation_mode=truncation_mode
    )
    return collate


# -- the trainer: reference log-probs from our cache, tokens counted ----------------------------------------------


def join_reference(dataset: Dataset, table: RefTable, columns: tuple[str, ...]) -> Dataset:
    """``dataset`` with the cached reference log-probs added as ``columns``, joined on its ``index`` column (as
    float64 arrays, the type a list of Python floats gave them)."""
    import numpy as np

    index = np.asarray(dataset.with_format("numpy")["index"], dtype=np.int64)
    for pos, column in enumerate(columns):
        dataset = dataset.add_column(column, table.column(pos)[index].astype(np.float64))
    return dataset


def generated_masks(out: tuple[Any, ...], n_prompts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_mask, completion_mask) of what ``OnlineDPOTrainer._generate`` returned for ``n_prompts`` prompts
    (two completions each); refuse any other shape rather than count the wrong tensors."""
    import torch

    if not isinstance(out, tuple) or len(out) != 5:
        got = len(out) if isinstance(out, tuple) else type(out).__name__
        raise _error(
            f"OnlineDPOTrainer._generate returned {got} values, expected 5 "
            "(prompt ids and mask, completion ids and mask, vision inputs)"
        )
    masks = (out[1], out[3])
    for name, mask in zip(("prompt_mask", "completion_mask"), masks, strict=True):
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.size(0) != 2 * n_prompts:
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise _error(f"OnlineDPOTrainer._generate's {name} is {shape}, expected ({2 * n_prompts}, length)")
    return masks


def _tokens_in(inputs: dict[str, Any]) -> Any:
    """The batch's tokens, as a tensor: read at logging time, so counting costs no device sync per micro-batch."""
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = inputs.get("chosen_attention_mask")
    return 0 if mask is None else mask.sum()


@contextlib.contextmanager
def _model_hash_skipped(base: type[Any]) -> Iterator[None]:
    """TRL's DPO and KTO trainers hash every weight to fingerprint their own precompute cache, which we replace:
    skip it (seconds to minutes on a large model, for nothing)."""
    module = sys.modules[base.__module__]
    original = getattr(module, "hash_module", None)
    if original is not None:
        module.hash_module = lambda m: "prefops-reference-cache"  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if original is not None:
            module.hash_module = original  # type: ignore[attr-defined]


def pretokenized(dataset: Any) -> bool:
    """Whether a split holds ``DPOTrainer._prepare_dataset``'s or ``KTOTrainer._prepare_dataset``'s output (their
    token columns, no raw ``prompt``)."""
    names = set(getattr(dataset, "column_names", None) or ())
    paired, unpaired = {"prompt_ids", "chosen_ids", "rejected_ids"}, {"prompt_ids", "completion_ids", "label"}
    return (paired <= names or unpaired <= names) and "prompt" not in names


def unpaired_from_tokens(tokens: Dataset, labels: list[bool], kl: bool) -> Dataset:
    """KTO rows in the columns ``KTOTrainer._prepare_dataset`` gives, from the reference cache's tokens (where
    ``chosen_ids`` is the completion and ``rejected_ids`` its KL completion, :func:`prepare_unpaired`) and the
    split's labels, in row order."""
    rows = tokens.rename_column("chosen_ids", "completion_ids")
    rows = rows.rename_column("rejected_ids", "KL_completion_ids") if kl else rows.remove_columns("rejected_ids")
    return rows.add_column("label", list(labels))


#: The token columns of TRL's tokenized rows (DPO's pairs, KTO's completions, CPO's and ORPO's prompt-and-answer
#: sequences, which hold the prompt already): a row's length is their sum.
LENGTH_COLUMNS = (
    "prompt_ids",
    "chosen_ids",
    "rejected_ids",
    "completion_ids",
    "chosen_input_ids",
    "rejected_input_ids",
)


def token_lengths(dataset: Dataset) -> list[int] | None:
    """Each row's tokens (prompt and completions together), from the token columns it has; None when it has none
    (Online DPO's rows are prompts its policy completes)."""
    import numpy as np
    import pyarrow.compute as pc

    columns = [c for c in LENGTH_COLUMNS if c in dataset.column_names]
    if not columns:
        return None
    table = dataset.with_format("arrow")[:]
    total = np.zeros(len(table), dtype=np.int64)
    for c in columns:
        total += np.asarray(pc.list_value_length(table.column(c)).fill_null(0), dtype=np.int64)
    return [int(n) for n in total]


def trainer_class(base: type[Any], reference_columns: tuple[str, ...]) -> type[Any]:
    """``base`` (a TRL trainer class) that reads reference log-probs from our cache and counts its tokens.

    Construct it with ``reference=`` (split name -> :data:`RefTable`) when the job precomputed; TRL then joins
    those tables into ``reference_columns`` instead of computing them. ``policy=`` (the trainer -> a wrapper of
    the model its loss calls, or None) lets a faster forward answer the loss's model calls (prefix sharing).
    ``prefops_tokens`` counts the tokens trained on (prompts and completions), and Online DPO also logs
    ``completion_length``. ``group_by_length=True`` batches rows of about the same length (``_get_train_sampler``).
    """

    class PrefopsTrainer(base):  # type: ignore[misc]  # base: the TRL trainer the algorithm names
        def __init__(
            self,
            *args: Any,
            reference: dict[str, RefTable] | None = None,
            policy: Callable[[Any], Callable[[Any], Any] | None] | None = None,
            group_by_length: bool = False,
            **kwargs: Any,
        ) -> None:
            self._prefops_reference = reference or {}
            self._prefops_group_by_length = group_by_length
            self.prefops_tokens: Any = 0
            with _model_hash_skipped(base):
                super().__init__(*args, **kwargs)
            self._prefops_policy = policy(self) if policy is not None else None

        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
            """A checkpoint of a ZeRO-3 full fine-tune holds DeepSpeed's states alone (saved next by the Trainer,
            and all a resume reads): no gathered copy of the model. A LoRA job under ZeRO-3 saves its adapter, at a
            checkpoint and at the end, from the adapter's parameters alone gathered (``adapters.zero3``), through
            the Trainer's own ``_save`` (peft's files, the tokenizer, the arguments), as transformers does."""
            if zero3.saves_adapter(self):
                self._save(output_dir, state_dict=zero3.adapter_state(self.model, self.args.process_index))
                return
            if _internal_call and output_dir is not None and zero3.partitioned(self):
                os.makedirs(output_dir, exist_ok=True)
                return
            super().save_model(output_dir, _internal_call)

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            """``training.groupByLength``: the rows shuffled, then each run of 50 batches sorted by length."""
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            lengths = token_lengths(dataset) if self._prefops_group_by_length and dataset is not None else None
            if lengths is None:
                return super()._get_train_sampler(train_dataset)
            from transformers.trainer_pt_utils import LengthGroupedSampler

            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return LengthGroupedSampler(batch, lengths=lengths)

        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            """A split already tokenized (the reference cache's tokens, :func:`pretokenized`) is not tokenized again."""
            if pretokenized(dataset):
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

        def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
            """Join the cached reference log-probs on the row index instead of computing them."""
            return join_reference(dataset, self._prefops_reference[name], reference_columns)

        def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            self.prefops_tokens += _tokens_in(inputs)
            if self._prefops_policy is not None:
                model = self._prefops_policy(model)  # TRL's loss code, a faster policy forward underneath
            return super().compute_loss(model, inputs, *args, **kwargs)

        def _generate(self, model: Any, prompts: list[Any], images: Any = None) -> Any:
            """Online DPO: also log the generated completions' mean length, and count their tokens."""
            out = super()._generate(model, prompts, images)
            prompt_mask, completion_mask = generated_masks(out, len(prompts))
            self.prefops_tokens += int(prompt_mask.sum() + completion_mask.sum())
            lengths = completion_mask.sum(dim=1).float().mean()
            self.stats.setdefault("completion_length", []).append(self.accelerator.gather(lengths).mean().item())
            return out

    return PrefopsTrainer
