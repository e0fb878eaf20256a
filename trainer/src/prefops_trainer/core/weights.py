"""What the export's streaming merge decides without touching a tensor: the safetensors layout of a file (from its
header), the output's shards and index, and which base tensor each tensor of a peft LoRA adapter changes and how.

The merge itself (``adapters/weights.py``) reads one tensor, or a block of its rows, at a time, so its memory grows
with the largest block, never with the model. Everything here is pure: a header is bytes, an adapter's config is a
mapping, a plan is frozen dataclasses.

The LoRA arithmetic is peft's (``peft.tuners.lora.layer``, ``get_delta_weight``): a linear layer's weight gains
``(B @ A) * scaling``, transposed when the layer stores its weight as (in, out) (``fan_in_fan_out``: GPT-2's Conv1D);
an embedding's gains ``(B @ A).T * scaling``; ``scaling`` is ``lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with
``use_rslora``. A module in ``modules_to_save`` is replaced by the adapter's copy. A peft setting that would make
the merged weights anything else is refused (:class:`~prefops_trainer.core.errors.MergeError`, naming the field).
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import MergeError

#: Bytes per element of each safetensors dtype.
DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2,
    "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
#: The dtypes a LoRA delta can be added to.
FLOATING = frozenset({"F64", "F32", "F16", "BF16"})
#: The prefix peft puts before a causal LM's module names in an adapter file.
PEFT_PREFIX = "base_model.model."
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
#: The largest header a safetensors file may have (the format's own limit, 100 MB).
MAX_HEADER = 100_000_000


class NamesDiffer(MergeError):
    """The adapter names weights the base checkpoint stores under other names or fused (transformers converts such
    checkpoints when it loads them, e.g. mixture-of-experts layers): the merge cannot map them file to file, while
    peft on the loaded model can."""


@dataclass(frozen=True)
class Tensor:
    """One tensor of a safetensors file: its dtype and shape, and where its bytes are (offsets into the file)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def rows(self) -> int:
        """Rows of its first dimension (1 for a scalar)."""
        return self.shape[0] if self.shape else 1


def header_length(prefix: bytes, where: str) -> int:
    """The length of the JSON header that follows a safetensors file's first 8 bytes, ``prefix``."""
    if len(prefix) != 8:
        raise MergeError(f"{where}: not a safetensors file (shorter than its 8-byte header length)")
    (n,) = struct.unpack("<Q", prefix)
    if n > MAX_HEADER:
        raise MergeError(f"{where}: not a safetensors file (header length {n} bytes)")
    return int(n)


def parse_header(raw: bytes, where: str) -> list[Tensor]:
    """The tensors a safetensors header (the JSON after the 8-byte length) describes, in the order of their bytes;
    offsets count from the file's start."""
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise MergeError(f"{where}: not a safetensors file (its header is not JSON: {e})") from None
    base = 8 + len(raw)
    tensors = [_tensor(name, entry, base, where) for name, entry in doc.items() if name != "__metadata__"]
    return sorted(tensors, key=lambda t: t.start)


def _tensor(name: str, entry: Any, base: int, where: str) -> Tensor:
    try:
        dtype, shape, (begin, end) = entry["dtype"], tuple(int(d) for d in entry["shape"]), entry["data_offsets"]
    except (KeyError, TypeError, ValueError):
        raise MergeError(f"{where}: tensor {name!r} has no dtype, shape or data_offsets") from None
    if dtype not in DTYPE_BYTES:
        raise MergeError(f"{where}: tensor {name!r} has dtype {dtype}, which the merge does not know")
    if end - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
        raise MergeError(f"{where}: tensor {name!r}: its byte range does not hold a {dtype} tensor of shape {shape}")
    return Tensor(name, dtype, shape, base + begin, base + end)


def encode_header(tensors: Sequence[Tensor]) -> bytes:
    """The 8-byte length and JSON header of a safetensors file holding ``tensors`` back to back, in that order
    (padded with spaces to 8 bytes, as the format recommends)."""
    doc: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        doc[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(doc, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def plan_shards(tensors: Sequence[Tensor], max_bytes: int) -> list[list[Tensor]]:
    """``tensors`` in order, cut into shards of at most ``max_bytes`` each (a larger tensor alone in its own), as
    transformers' ``save_pretrained(max_shard_size=...)`` cuts them."""
    shards: list[list[Tensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards if shards[0] else []


def shard_names(count: int) -> list[str]:
    """transformers' file names for ``count`` shards: ``model.safetensors`` alone, else ``model-00001-of-00003...``."""
    if count == 1:
        return [SINGLE_FILE]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def index_doc(shards: Sequence[Sequence[Tensor]], names: Sequence[str]) -> dict[str, Any]:
    """``model.safetensors.index.json`` for ``shards`` written as ``names``."""
    weight_map = {t.name: name for shard, name in zip(shards, names, strict=True) for t in shard}
    total = sum(t.nbytes for shard in shards for t in shard)
    return {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}


def weight_files(index: Mapping[str, Any] | None, where: str) -> list[str]:
    """The shard files of a model folder, in order: those ``index`` (its parsed ``model.safetensors.index.json``)
    maps to, else ``model.safetensors`` alone."""
    if index is None:
        return [SINGLE_FILE]
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise MergeError(f"{where}/{INDEX_FILE}: has no weight_map")
    files = list(dict.fromkeys(str(f) for f in weight_map.values()))
    bad = [f for f in files if "/" in f or "\\" in f or f.startswith(".")]
    if bad:
        raise MergeError(f"{where}/{INDEX_FILE}: names a file outside the folder: {bad[0]!r}")
    return files


# -- the adapter ---------------------------------------------------------------------------------------------------

#: adapter_config.json fields the merge reads, or that do not change the merged weights (training, init, metadata).
_UNDERSTOOD = frozenset({
    "peft_type", "r", "lora_alpha", "use_rslora", "fan_in_fan_out", "target_modules", "exclude_modules",
    "modules_to_save", "bias", "init_lora_weights", "lora_dropout", "layers_to_transform", "layers_pattern",
    "inference_mode", "task_type", "base_model_name_or_path", "revision", "auto_mapping", "peft_version",
    "megatron_core", "qalora_group_size", "rank_pattern", "alpha_pattern", "target_parameters",
})  # fmt: skip
#: init_lora_weights values that initialise the adapter alone (PiSSA, OLoRA, CorDA, LoftQ... change the base too).
_PLAIN_INIT = (True, False, "gaussian")


@dataclass(frozen=True)
class LoraConfig:
    """The fields of a peft ``adapter_config.json`` the merge honours."""

    r: int
    alpha: float
    use_rslora: bool
    fan_in_fan_out: bool
    target_modules: str | tuple[str, ...]
    exclude_modules: str | tuple[str, ...]
    modules_to_save: tuple[str, ...]
    rank_pattern: Mapping[str, int]
    alpha_pattern: Mapping[str, float]

    def rank(self, module: str) -> int:
        """The rank of ``module``: its ``rank_pattern`` entry, else ``r``."""
        return int(self.rank_pattern.get(_pattern_key(self.rank_pattern, module), self.r))

    def scaling(self, module: str) -> float:
        """peft's ``scaling`` of ``module``: alpha / r, or alpha / sqrt(r) with rsLoRA (patterns applied)."""
        r = self.rank(module)
        alpha = float(self.alpha_pattern.get(_pattern_key(self.alpha_pattern, module), self.alpha))
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r


def _pattern_key(patterns: Mapping[str, Any], module: str) -> str:
    """peft's ``get_pattern_key``: the first pattern that matches the end of ``module`` at a dot."""
    return next((p for p in patterns if re.match(rf"(.*\.)?({p})$", module)), module)


def lora_config(doc: Mapping[str, Any], where: str) -> LoraConfig:
    """The :class:`LoraConfig` of a parsed ``adapter_config.json``; :class:`MergeError` naming the first field whose
    value the merge does not support (DoRA, a trained bias, rank or alpha patterns, an init that changes the base)."""
    problem = _unsupported(doc)
    if problem:
        raise MergeError(f"{where}: {problem}; merge it with peft, or export without merging (output.merge: false)")
    if doc.get("target_parameters"):
        raise NamesDiffer(f"{where}: target_parameters {doc['target_parameters']!r} adapt fused parameters (experts)")
    r, alpha = doc.get("r"), doc.get("lora_alpha")
    if not isinstance(r, int) or r < 1 or not isinstance(alpha, int | float) or isinstance(alpha, bool):
        raise MergeError(f"{where}: r must be a positive integer and lora_alpha a number, got {r!r} and {alpha!r}")
    return LoraConfig(
        r=r,
        alpha=float(alpha),
        use_rslora=bool(doc.get("use_rslora")),
        fan_in_fan_out=bool(doc.get("fan_in_fan_out")),
        target_modules=_names(doc.get("target_modules")),
        exclude_modules=_names(doc.get("exclude_modules")),
        modules_to_save=tuple(_names(doc.get("modules_to_save")) or ()),
        rank_pattern=dict(doc.get("rank_pattern") or {}),
        alpha_pattern=dict(doc.get("alpha_pattern") or {}),
    )


def _unsupported(doc: Mapping[str, Any]) -> str | None:
    """The first setting the streaming merge does not support, as ``field: ...``; None when there is none."""
    if doc.get("peft_type") != "LORA":
        return f"peft_type is {doc.get('peft_type')!r}; the merge supports LORA only"
    if doc.get("bias", "none") != "none":
        return f"bias is {doc['bias']!r} (trained biases); the merge supports 'none' only"
    if doc.get("init_lora_weights", True) not in _PLAIN_INIT:
        return f"init_lora_weights is {doc['init_lora_weights']!r}, which changes the base weights too"
    for field in sorted(doc):
        if field not in _UNDERSTOOD and doc[field] not in (None, False, {}, [], ""):
            return f"{field} is {doc[field]!r}, which the merge does not support"
    return None


def _names(value: Any) -> str | tuple[str, ...]:
    if value is None or isinstance(value, str):
        return value or ()
    return tuple(str(v) for v in value)


def _matches(module: str, names: str | tuple[str, ...]) -> bool:
    """peft's ``check_target_module_exists``: a string is a regex the whole name matches; a list holds names or
    name suffixes (``q_proj`` matches ``model.layers.0.self_attn.q_proj``)."""
    if isinstance(names, str):
        return names == "all-linear" or re.fullmatch(names, module) is not None
    return any(module == n or module.endswith("." + n) for n in names)


@dataclass(frozen=True)
class Delta:
    """A base tensor gains ``(b[rows] @ a) * scaling`` (``a``, ``b`` adapter tensor names); ``transposed``: the
    adapter's A and B swap roles and are transposed (``(B @ A).T``: fan_in_fan_out layers and embeddings)."""

    a: str
    b: str
    scaling: float
    transposed: bool
    #: the adapter's own copy of the base weight, which it is added to instead (peft saves an adapted embedding's)
    base: str | None = None


@dataclass(frozen=True)
class Replace:
    """A base tensor is replaced by the adapter's tensor ``name`` (a module in ``modules_to_save``)."""

    name: str


_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A\.weight|lora_B\.weight|lora_embedding_A|lora_embedding_B)$")


def plan_merge(config: LoraConfig, adapter: Iterable[Tensor], base: Mapping[str, Tensor]) -> dict[str, Delta | Replace]:
    """What happens to each base tensor the adapter changes, by the base tensor's name; :class:`MergeError` naming
    the adapter tensor that changes nothing the base has, or that the config does not account for."""
    pairs: dict[str, dict[str, Tensor]] = {}
    plan: dict[str, Delta | Replace] = {}
    for t in adapter:
        name = _module_path(t.name)
        found = _LORA_KEY.match(name)
        if found:
            pairs.setdefault(found["module"], {})[found["kind"]] = t
        elif name.endswith(".base_layer.weight"):
            pairs.setdefault(name.removesuffix(".base_layer.weight"), {})["base"] = t
        else:
            plan[_replaced(config, name, t, base)] = Replace(t.name)
    for module, parts in pairs.items():
        plan[_base_name(module, base)] = _delta(config, module, parts, base)
    return plan


def _module_path(key: str) -> str:
    if not key.startswith(PEFT_PREFIX):
        raise MergeError(f"adapter tensor {key!r} does not start with {PEFT_PREFIX!r}: not a causal LM's peft adapter")
    return key[len(PEFT_PREFIX) :]


def _replaced(config: LoraConfig, name: str, t: Tensor, base: Mapping[str, Tensor]) -> str:
    module = name.rsplit(".", 1)[0]
    if not _matches(module, config.modules_to_save):
        raise MergeError(f"adapter tensor {t.name!r} is neither a LoRA weight nor under modules_to_save")
    if name not in base:
        raise NamesDiffer(f"adapter tensor {t.name!r} (modules_to_save) replaces {name!r}, which the base lacks")
    if base[name].shape != t.shape:
        raise MergeError(f"adapter tensor {t.name!r} has shape {t.shape}, the base's {name!r} {base[name].shape}")
    return name


def _base_name(module: str, base: Mapping[str, Tensor]) -> str:
    name = f"{module}.weight"
    if name not in base:
        raise NamesDiffer(f"the adapter changes {module!r}, whose weight {name!r} the base checkpoint lacks")
    return name


def _delta(config: LoraConfig, module: str, parts: Mapping[str, Tensor], base: Mapping[str, Tensor]) -> Delta:
    embedding = "lora_embedding_A" in parts or "lora_embedding_B" in parts
    keys = ("lora_embedding_A", "lora_embedding_B") if embedding else ("lora_A.weight", "lora_B.weight")
    a, b, own = parts.get(keys[0]), parts.get(keys[1]), parts.get("base")
    if a is None or b is None or len(parts) != 2 + (own is not None):
        raise MergeError(f"the adapter has {sorted(parts)} for {module!r}: a LoRA layer needs exactly its A and B")
    if not _matches(module, config.target_modules) or _matches_excluded(module, config):
        raise MergeError(f"the adapter changes {module!r}, which target_modules/exclude_modules do not select")
    target = base[_base_name(module, base)]
    transposed = embedding or config.fan_in_fan_out
    _check_shapes(module, a, b, target, config.rank(module), transposed)
    if own is not None and (own.shape != target.shape or own.dtype not in FLOATING):
        raise MergeError(f"adapter tensor {own.name!r} has shape {own.shape}, the base weight {target.shape}")
    return Delta(a.name, b.name, config.scaling(module), transposed, own.name if own else None)


def _matches_excluded(module: str, config: LoraConfig) -> bool:
    return bool(config.exclude_modules) and _matches(module, config.exclude_modules)


def _check_shapes(module: str, a: Tensor, b: Tensor, target: Tensor, r: int, transposed: bool) -> None:
    if len(a.shape) != 2 or len(b.shape) != 2 or len(target.shape) != 2:
        raise MergeError(f"{module!r}: the merge handles 2-D weights only, got A {a.shape}, B {b.shape}")
    if a.shape[0] != r or b.shape[1] != r:
        raise MergeError(
            f"{module!r}: rank {a.shape[0]} in the adapter file, {r} in adapter_config.json (r, rank_pattern)"
        )
    if target.dtype not in FLOATING:
        raise MergeError(
            f"{module!r}: the base weight is {target.dtype}; the merge adds to floating-point weights only"
        )
    want = (a.shape[1], b.shape[0]) if transposed else (b.shape[0], a.shape[1])
    if target.shape != want:
        raise MergeError(f"{module!r}: the adapter's delta has shape {want}, the base weight {target.shape}")
