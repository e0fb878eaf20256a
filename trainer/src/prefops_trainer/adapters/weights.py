"""Safetensors weights read and written a block at a time: the export's LoRA merge and re-sharding in bounded memory.

A model is never loaded whole. Each output shard's header is written first (every tensor keeps its name, dtype and
shape, so the header is known from the inputs' headers alone, ``core/weights.py``), then its tensors' bytes one by
one: a tensor the adapter does not touch is copied byte for byte in blocks of :data:`BLOCK_BYTES`; a tensor it
changes is read a block of rows at a time, the delta of those rows added in float32 (as peft adds it) and the sum
written back in the tensor's own dtype. Memory is the largest block plus one layer's A and B, whatever the model's
size; a shard file gets its final name only once it is complete.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ..core.errors import MergeError
from ..core.weights import (
    DTYPE_BYTES,
    INDEX_FILE,
    Delta,
    Replace,
    Tensor,
    encode_header,
    header_length,
    index_doc,
    lora_config,
    parse_header,
    plan_merge,
    plan_shards,
    shard_names,
    weight_files,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: The most bytes of a tensor held in memory at once (a block of rows; a row larger than this is read whole).
BLOCK_BYTES = 16 * 2**20
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: Files of a base model folder the merged model keeps, besides its code (``*.py``, for trustRemoteCode models); the
#: weights are written anew, the tokenizer by the export.
MODEL_FILES = ("config.json", "generation_config.json")


@dataclass(frozen=True)
class Source:
    """Where an output tensor's bytes come from: ``tensor`` of ``path``, changed by ``change`` (None: as it is); or,
    when ``pieces`` is given, those byte ranges of those files put end to end (ZeRO-3 partitions, ``adapters.zero3``).
    """

    path: Path
    tensor: Tensor
    change: Delta | Replace | None = None
    pieces: tuple[tuple[Path, Tensor], ...] = ()


def layout(path: Path) -> list[Tensor]:
    """The tensors of the safetensors file ``path``, in the order of their bytes (only its header is read)."""
    if not path.is_file():
        raise MergeError(f"{path}: no such file")
    with path.open("rb") as f:
        length = header_length(f.read(8), str(path))
        return parse_header(f.read(length), str(path))


def model_layout(folder: Path) -> dict[str, Source]:
    """Every tensor of the model in ``folder`` (``model.safetensors``, or the shards its index names), by name, in
    file order."""
    index_path = folder / INDEX_FILE
    index = json.loads(index_path.read_text()) if index_path.is_file() else None
    files = weight_files(index, str(folder))
    if index is None and not (folder / files[0]).is_file():
        raise MergeError(
            f"{folder}: no safetensors weights ({files[0]} or {INDEX_FILE}); the merge reads no other format"
        )
    return {t.name: Source(folder / name, t) for name in files for t in layout(folder / name)}


def merge_lora(base_dir: Path, adapter_dir: Path, out: Path, max_shard_bytes: int) -> list[str]:
    """Write the base model in ``base_dir`` with the peft LoRA adapter in ``adapter_dir`` merged into it, as
    safetensors shards of at most ``max_shard_bytes`` (with an index when there are several), plus the base's
    config files, into ``out``; return the weight files written."""
    config = lora_config(json.loads((adapter_dir / ADAPTER_CONFIG).read_text()), str(adapter_dir / ADAPTER_CONFIG))
    adapter_file = adapter_dir / ADAPTER_WEIGHTS
    adapter = {t.name: t for t in layout(adapter_file)}
    base = model_layout(base_dir)
    plan = plan_merge(config, adapter.values(), {name: s.tensor for name, s in base.items()})
    log.info("merging %d LoRA layers into %d base tensors, shard by shard", len(plan), len(base))
    sources = [Source(s.path, s.tensor, plan.get(name)) for name, s in base.items()]
    written = write_model(sources, out, max_shard_bytes, Adapter(adapter_file, adapter))
    for path in [base_dir / name for name in MODEL_FILES] + sorted(base_dir.glob("*.py")):  # *.py: remote code
        if path.is_file():
            shutil.copyfile(path, out / path.name)
    return written


def reshard(folder: Path, out: Path, max_shard_bytes: int) -> list[str]:
    """Write the weights of the model in ``folder`` into ``out`` as shards of at most ``max_shard_bytes`` (tensor
    bytes copied in blocks); return the weight files written."""
    return write_model(list(model_layout(folder).values()), out, max_shard_bytes, None)


def weight_file_names(folder: Path) -> set[str]:
    """The safetensors weight files of ``folder`` and its index (the names :func:`reshard` replaces)."""
    return {p.name for p in folder.glob("*.safetensors")} | ({INDEX_FILE} if (folder / INDEX_FILE).is_file() else set())


@dataclass(frozen=True)
class Adapter:
    """The adapter's weights file and its tensors, read one at a time."""

    path: Path
    tensors: Mapping[str, Tensor]

    def read(self, name: str) -> torch.Tensor:
        with self.path.open("rb") as f:
            return read_tensor(f, self.tensors[name])


def write_model(sources: list[Source], out: Path, max_shard_bytes: int, adapter: Adapter | None) -> list[str]:
    """``sources`` written to ``out`` in shards (:func:`~prefops_trainer.core.weights.plan_shards`) and the index."""
    out.mkdir(parents=True, exist_ok=True)
    by_name = {s.tensor.name: s for s in sources}
    shards = plan_shards([s.tensor for s in sources], max_shard_bytes)
    names = shard_names(len(shards))
    with _open_files() as files:
        for shard, name in zip(shards, names, strict=True):
            _write_shard(out / name, [by_name[t.name] for t in shard], files, adapter)
    if len(names) > 1:
        (out / INDEX_FILE).write_text(json.dumps(index_doc(shards, names), indent=2) + "\n")
    log.info("wrote %d weight file(s) to %s", len(names), out)
    return names


class _Files(dict[Path, io.BufferedReader]):
    """Input files opened once each, closed together."""

    def __missing__(self, path: Path) -> io.BufferedReader:
        f = self[path] = path.open("rb")
        return f


@contextlib.contextmanager
def _open_files() -> Iterator[_Files]:
    files = _Files()
    try:
        yield files
    finally:
        for f in files.values():
            f.close()


def _write_shard(path: Path, sources: list[Source], files: _Files, adapter: Adapter | None) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as dst:
        dst.write(encode_header([s.tensor for s in sources]))
        for s in sources:
            _emit(s, files, dst, adapter)
    os.replace(partial, path)


def _emit(source: Source, files: _Files, dst: IO[bytes], adapter: Adapter | None) -> None:
    """Write ``source``'s tensor bytes, changed as it says, to ``dst``."""
    for path, span in source.pieces:
        _copy_bytes(files[path], span, dst)
    if source.pieces:
        return
    src = files[source.path]
    if source.change is None:
        _copy_bytes(src, source.tensor, dst)
        return
    assert adapter is not None, "a change needs the adapter"
    if isinstance(source.change, Replace):
        _write(dst, adapter.read(source.change.name).to(torch_dtype(source.tensor.dtype)))
        return
    if source.change.base is not None:  # the adapter's own copy of the base weight, in the base's dtype
        own = adapter.tensors[source.change.base]
        _merge_rows(files[adapter.path], own, source.change, adapter, dst, source.tensor.dtype)
        return
    _merge_rows(src, source.tensor, source.change, adapter, dst, source.tensor.dtype)


def _copy_bytes(src: io.BufferedReader, t: Tensor, dst: IO[bytes]) -> None:
    src.seek(t.start)
    left = t.nbytes
    while left:
        block = src.read(min(BLOCK_BYTES, left))
        if not block:
            raise MergeError(f"{getattr(src, 'name', 'a weights file')}: ends inside tensor {t.name!r}")
        dst.write(block)
        left -= len(block)


def _merge_rows(
    src: io.BufferedReader, t: Tensor, delta: Delta, adapter: Adapter, dst: IO[bytes], out_dtype: str
) -> None:
    """``t`` plus ``(B @ A) * scaling``, computed and written a block of rows at a time in ``out_dtype``."""
    import torch

    a, b = adapter.read(delta.a).float(), adapter.read(delta.b).float()
    left, right = (a.T, b.T) if delta.transposed else (b, a)
    dtype, cols = torch_dtype(out_dtype), t.shape[1]
    row_bytes = max(1, t.nbytes // t.rows)
    step = max(1, BLOCK_BYTES // (cols * 4))
    compute = torch.promote_types(dtype, torch.float32)
    for r0 in range(0, t.rows, step):
        r1 = min(t.rows, r0 + step)
        part = Tensor(t.name, t.dtype, (r1 - r0, cols), t.start + r0 * row_bytes, t.start + r1 * row_bytes)
        merged = (left[r0:r1] @ right).mul_(delta.scaling)  # peft's delta, then the base added: in place, one copy
        merged.add_(read_tensor(src, part).to(compute))
        _write(dst, merged.to(dtype))


def read_tensor(f: io.BufferedReader, t: Tensor) -> torch.Tensor:
    """The tensor ``t`` of the open safetensors file ``f``, read into memory of its own."""
    import torch

    dtype = torch_dtype(t.dtype)
    if t.nbytes == 0:
        return torch.empty(t.shape, dtype=dtype)
    buf = bytearray(t.nbytes)
    f.seek(t.start)
    if f.readinto(buf) != t.nbytes:
        raise MergeError(f"{getattr(f, 'name', 'a weights file')}: ends inside tensor {t.name!r}")
    return torch.frombuffer(buf, dtype=torch.uint8).view(dtype).reshape(t.shape)


def _write(dst: IO[bytes], tensor: torch.Tensor) -> None:
    import torch

    if tensor.numel():
        dst.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype name."""
    import torch

    return {
        "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
        "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U64": torch.uint64,
        "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8, "BOOL": torch.bool,
        "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    }[name]  # fmt: skip


def safetensors_dtype(dtype: torch.dtype) -> str:
    """The safetensors dtype name of a torch dtype."""
    for name in DTYPE_BYTES:
        if torch_dtype(name) == dtype:
            return name
    raise MergeError(f"tensors of dtype {dtype} have no safetensors dtype")
