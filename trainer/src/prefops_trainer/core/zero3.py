"""The weights a ZeRO-3 full fine-tune hands to export: each rank's partitions as they are, never gathered, and how
export cuts the model's tensors from them (issue 21).

DeepSpeed ZeRO-3 splits every parameter, flattened, into ``world`` equal partitions of ``ceil(numel / world)``
elements, rank ``r`` holding elements ``[r * p, (r + 1) * p)`` and the last rank's padded with zeros
(``deepspeed.runtime.zero.partition_parameters``; ``zero3_partitioned_param_info`` in
``deepspeed/utils/zero_to_fp32.py``). At the end of training each rank writes its own partitions, in the model's
dtype, as one safetensors file (:func:`partition_file`; a tensor per parameter, of shape ``(p,)``), and rank 0 writes
:data:`LAYOUT`: the world size and every tensor of the model with its dtype and shape, and whether it is partitioned
(parameters) or stored whole in rank 0's file (persistent buffers, which ZeRO-3 does not partition).

Export writes each tensor of the model by copying, rank after rank, the bytes of its partitions that are not
padding (:func:`pieces`): the tensor's row-major bytes, exactly what gathering the parameter would give, in bounded
memory. Everything here is pure: a layout is a mapping, a rank file is known by its safetensors header.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import MergeError
from .weights import DTYPE_BYTES, Tensor

#: The layout file rank 0 writes beside the partitions.
LAYOUT = "zero3-layout.json"
FORMAT = 1


@dataclass(frozen=True)
class Entry:
    """One tensor of the model: its name, safetensors dtype and full shape; ``partitioned``: cut across every rank's
    file (a parameter), else whole in rank 0's (a buffer)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    partitioned: bool

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_BYTES[self.dtype]


@dataclass(frozen=True)
class Layout:
    """:data:`LAYOUT` parsed: the ranks that wrote partitions and the model's tensors, in the order to write them."""

    world: int
    entries: tuple[Entry, ...]


def partition_file(rank: int, world: int) -> str:
    """The file rank ``rank`` of ``world`` writes its partitions to."""
    return f"zero3-partitions-rank-{rank:05d}-of-{world:05d}.safetensors"


def partition_numel(numel: int, world: int) -> int:
    """Elements of each rank's partition of a parameter of ``numel`` elements (DeepSpeed's ``ceil(numel / world)``)."""
    return -(-numel // world)


def layout_doc(world: int, entries: Sequence[Entry]) -> dict[str, Any]:
    """:data:`LAYOUT`'s content."""
    tensors = [
        {"name": e.name, "dtype": e.dtype, "shape": list(e.shape), "partitioned": e.partitioned} for e in entries
    ]
    return {"format": FORMAT, "worldSize": world, "tensors": tensors}


def parse_layout(doc: Any, where: str) -> Layout:
    """The :class:`Layout` of a parsed :data:`LAYOUT`; :class:`MergeError` naming the first field that is wrong."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise MergeError(f"{where}: not a ZeRO-3 layout of format {FORMAT}")
    world, tensors = doc.get("worldSize"), doc.get("tensors")
    if not isinstance(world, int) or isinstance(world, bool) or world < 1:
        raise MergeError(f"{where}: worldSize must be a positive integer, got {world!r:.80}")
    if not isinstance(tensors, list) or not tensors:
        raise MergeError(f"{where}: tensors must be a non-empty list")
    entries = tuple(_entry(t, f"{where}: tensors[{i}]") for i, t in enumerate(tensors))
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise MergeError(f"{where}: names a tensor twice")
    return Layout(world, entries)


def _entry(doc: Any, where: str) -> Entry:
    try:
        name, dtype, shape, partitioned = doc["name"], doc["dtype"], doc["shape"], doc["partitioned"]
        shape = tuple(int(d) for d in shape)
    except (KeyError, TypeError, ValueError):
        raise MergeError(f"{where}: needs name, dtype, shape and partitioned") from None
    if not isinstance(name, str) or dtype not in DTYPE_BYTES or any(d < 0 for d in shape):
        raise MergeError(f"{where}: name {name!r:.80}, dtype {dtype!r:.20} or shape {shape} is not valid")
    return Entry(name, dtype, shape, bool(partitioned))


def pieces(entry: Entry, world: int, files: Sequence[Mapping[str, Tensor]], where: Sequence[str]) -> list[Piece]:
    """Where the bytes of ``entry`` lie, in order: ``files[r]`` is rank ``r``'s file (its tensors by name, as its
    header gives them; ``where[r]`` its name for errors). A partitioned tensor is the first ``numel`` elements of its
    partitions put end to end; a buffer is rank 0's tensor. :class:`MergeError` naming the file whose partition is
    missing or of another dtype or size."""
    if not entry.partitioned:
        return [Piece(0, _part(entry, files[0], where[0], entry.shape), entry.nbytes)]
    size, item = partition_numel(entry.numel, world), DTYPE_BYTES[entry.dtype]
    out = []
    for rank in range(world):
        part = _part(entry, files[rank], where[rank], (size,) if entry.numel else (0,))
        count = max(0, min(entry.numel, (rank + 1) * size) - rank * size)
        if count:
            out.append(Piece(rank, part, count * item))
    return out


@dataclass(frozen=True)
class Piece:
    """``nbytes`` bytes from the start of ``tensor`` (a partition, or a whole buffer) of rank ``rank``'s file."""

    rank: int
    tensor: Tensor
    nbytes: int

    @property
    def span(self) -> Tensor:
        """The bytes to copy, as a tensor of bytes at their place in the file."""
        t = self.tensor
        return Tensor(t.name, "U8", (self.nbytes,), t.start, t.start + self.nbytes)


def _part(entry: Entry, tensors: Mapping[str, Tensor], where: str, shape: tuple[int, ...]) -> Tensor:
    found = tensors.get(entry.name)
    if found is None:
        raise MergeError(f"{where}: has no partition of {entry.name!r}: the ranks' files are not of one save")
    if found.dtype != entry.dtype or found.shape != shape:
        raise MergeError(
            f"{where}: {entry.name!r} is {found.dtype} {found.shape}, the layout says {entry.dtype} {shape}: the "
            "ranks' files are not of one save"
        )
    return found


def output_tensors(layout: Layout) -> list[Tensor]:
    """The model's tensors as the export writes them (offsets from 0, back to back)."""
    out, offset = [], 0
    for e in layout.entries:
        out.append(Tensor(e.name, e.dtype, e.shape, offset, offset + e.nbytes))
        offset += e.nbytes
    return out
