"""A ZeRO-3 full fine-tune's weights, saved by every rank from its own partitions and consolidated by export, neither
ever holding the model in one process (issue 21; the format: ``core/zero3.py``).

Gathering the 16-bit model on rank 0 at every save (DeepSpeed's ``stage3_gather_16bit_weights_on_model_save``) costs
rank 0 the whole model in host memory, and the checkpoints a copy of it that resuming never reads (a resume loads
DeepSpeed's own states). Under ZeRO-3 the trainer turns it off (``core.trlconfig``): a full fine-tune's checkpoint holds
DeepSpeed's states alone, and at the end each rank writes the partitions it holds (``param.ds_tensor``: the model's
dtype, the values a gather would return) one at a time; export then copies each tensor's bytes out of the ranks' files,
a block at a time, into the sharded writer of ``adapters.weights``. The export's memory is a block, whatever the
model's size; what it hands on is the model in its own dtype, exactly as gathering would have written it.

A model whose checkpoint transformers converts on load (fused experts) is the exception: ``save_pretrained`` alone
splits it back into the checkpoint's names, so its final save still gathers it on rank 0 (a warning says so), as the
LoRA merge hands such models to peft.

A LoRA job saves its adapter, at every checkpoint and at the end, from the adapter's own parameters gathered
(:func:`adapter_state`): the frozen model stays partitioned, never all-gathered layer by layer as transformers' save of
a peft model under ZeRO-3 does; peft's ``save_pretrained`` writes the files it always writes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import zero3
from ..core.uris import Uri
from ..core.weights import Tensor, encode_header
from . import storage, weights

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def partitioned(trainer: Any) -> bool:
    """Whether ``trainer`` runs ZeRO-3 with saves that do not gather the model (a full fine-tune's weights are saved
    with :func:`save`, an adapter from :func:`adapter_state`)."""
    engine = getattr(trainer, "deepspeed", None) if getattr(trainer, "is_deepspeed_enabled", False) else None
    return (
        engine is not None
        and engine.zero_optimization_stage() == 3
        and not engine.zero_gather_16bit_weights_on_model_save()
    )


def saves_adapter(trainer: Any) -> bool:
    """Whether ``trainer`` trains a peft adapter under ZeRO-3 (:func:`partitioned`): its saves gather the adapter alone
    (:func:`adapter_state`)."""
    from peft import PeftModel

    return partitioned(trainer) and isinstance(trainer.model, PeftModel)


def adapter_state(model: torch.nn.Module, rank: int) -> dict[str, torch.Tensor]:
    """The trainable parameters of ``model`` (a peft model under ZeRO-3: its adapter), gathered on every rank while
    the frozen model stays partitioned, copied to the CPU on rank 0 under their ``state_dict`` names (peft's
    ``save_pretrained(state_dict=...)`` picks the adapter's tensors from them and names them as it always does);
    empty on the other ranks. Every rank calls it."""
    import deepspeed

    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    with deepspeed.zero.GatheredParameters([p for _, p in trainable], modifier_rank=None):
        return {name: p.detach().to("cpu", copy=True) for name, p in trainable} if rank == 0 else {}


def save_trained(trainer: Any, folder: Path, rank: int, world: int) -> None:
    """The final weights of ``trainer`` (ZeRO-3, :func:`partitioned`) and, on rank 0, the model's config into
    ``folder``: each rank's partitions (:func:`save`); for a model whose checkpoint transformers converts on load
    (:func:`renames_on_save`), the 16-bit model gathered on rank 0 and saved by transformers, which converts it back,
    as before issue 21 (a warning says so). Every rank calls it."""
    model = trainer.model
    if renames_on_save(model):
        log.warning(
            "%s: transformers stores this model's weights under other names or fused otherwise than it holds them; "
            "gathering the whole model on rank 0 to save it instead of saving each rank's partitions",
            type(model).__name__,
        )
        state = trainer.deepspeed._zero3_consolidated_16bit_state_dict()  # a collective: every rank, model on rank 0
        if rank == 0:
            model.save_pretrained(str(folder), state_dict=state)
        return
    save(model, folder, rank, world)
    if rank == 0:
        model.config.save_pretrained(str(folder))
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(str(folder))


def send_own(folder: Path, remote: Uri, rank: int, world: int) -> dict[str, str]:
    """This rank's partition file (when it wrote one) by name with its sha256, stored at ``remote`` first when
    storage is remote: each rank sends its own, since a rank on another node than rank 0 wrote it to its own disk."""
    path = folder / zero3.partition_file(rank, world)
    if not path.is_file():
        return {}
    digest = storage.sha256_file(path)
    target = remote.join(path.name)
    if not remote.is_local and storage.stored_sha256(target) != digest:
        storage.upload_file(path, target, sha256=digest)
    return {path.name: digest}


def renames_on_save(model: Any) -> bool:
    """Whether transformers' ``save_pretrained`` writes ``model``'s weights under other names than the model holds
    them: it reverts the conversion it applied on load (fused experts, renamed layers), which copying partitions byte
    for byte cannot do. Asked of transformers itself (``revert_weight_conversion``, as ``save_pretrained`` calls it)
    on shapes alone: meta tensors, nothing gathered."""
    import torch
    from transformers.core_model_loading import revert_weight_conversion

    held = {
        name: torch.empty(tuple(getattr(t, "ds_shape", t.shape)), dtype=t.dtype, device="meta")
        for name, t in model.state_dict(keep_vars=True).items()
    }
    return set(revert_weight_conversion(model, dict(held))) != set(held)


def save(model: torch.nn.Module, folder: Path, rank: int, world: int) -> None:
    """Rank ``rank``'s partitions of ``model`` (and, on rank 0, its persistent buffers and :data:`zero3.LAYOUT`)
    into ``folder``; every rank calls it, none waits on another."""
    entries, tensors = _entries(model, rank)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / zero3.partition_file(rank, world)
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as f:
        f.write(encode_header([_header_tensor(name, t) for name, t in tensors]))
        for _, t in tensors:
            f.write(_bytes(t))
    os.replace(partial, path)
    if rank == 0:
        (folder / zero3.LAYOUT).write_text(json.dumps(zero3.layout_doc(world, entries), indent=1) + "\n")
    log.info("rank %d saved its ZeRO-3 partitions of %d tensors to %s", rank, len(entries), path.name)


def _entries(model: torch.nn.Module, rank: int) -> tuple[list[zero3.Entry], list[tuple[str, torch.Tensor]]]:
    """The model's tensors in ``state_dict`` order (a tied weight once, under its first name), and what this rank
    stores of them: each parameter's partition (``ds_tensor``), and on rank 0 each persistent buffer."""
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    entries, tensors = [], []
    for name in model.state_dict(keep_vars=True):
        if name in params:
            part, shape = _partition(name, params[name])
            entries.append(zero3.Entry(name, weights.safetensors_dtype(part.dtype), shape, True))
            tensors.append((name, part))
        elif name in buffers:
            b = buffers[name]
            entries.append(zero3.Entry(name, weights.safetensors_dtype(b.dtype), tuple(b.shape), False))
            if rank == 0:
                tensors.append((name, b))
    return entries, tensors


def _partition(name: str, param: torch.nn.Parameter) -> tuple[torch.Tensor, tuple[int, ...]]:
    """This rank's partition of ``param`` (DeepSpeed's ``ds_tensor``) and the parameter's full shape."""
    part, shape = getattr(param, "ds_tensor", None), getattr(param, "ds_shape", None)
    if part is None or shape is None:
        raise RuntimeError(f"parameter {name!r} is not partitioned by ZeRO-3 (no ds_tensor): nothing to save of it")
    return part, tuple(shape)


def _header_tensor(name: str, t: torch.Tensor) -> Tensor:
    nbytes = t.numel() * t.element_size()
    return Tensor(name, weights.safetensors_dtype(t.dtype), tuple(t.shape) if t.dim() else (), 0, nbytes)


def _bytes(t: torch.Tensor) -> memoryview:
    import torch

    return t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().data


def is_partitioned(folder: Path) -> bool:
    """Whether the trained weights in ``folder`` are ZeRO-3 partitions (:func:`save`)."""
    return (folder / zero3.LAYOUT).is_file()


def file_names(folder: Path) -> set[str]:
    """The files :func:`consolidate` reads (and replaces with the model's weights)."""
    return {zero3.LAYOUT} | {p.name for p in folder.glob("zero3-partitions-rank-*.safetensors")}


def consolidate(folder: Path, out: Path, max_shard_bytes: int) -> list[str]:
    """The model whose partitions :func:`save` wrote into ``folder``, written into ``out`` as safetensors shards of
    at most ``max_shard_bytes`` (with an index when there are several), tensor by tensor, a block of bytes at a time;
    return the weight files written."""
    where = folder / zero3.LAYOUT
    layout = zero3.parse_layout(json.loads(where.read_text()), str(where))
    paths = [folder / zero3.partition_file(r, layout.world) for r in range(layout.world)]
    files = [{t.name: t for t in weights.layout(p)} for p in paths]
    names = [str(p) for p in paths]
    sources = []
    for entry, tensor in zip(layout.entries, zero3.output_tensors(layout), strict=True):
        found = zero3.pieces(entry, layout.world, files, names)
        sources.append(weights.Source(paths[0], tensor, pieces=tuple((paths[p.rank], p.span) for p in found)))
    log.info("consolidating %d tensors from the partitions of %d ZeRO-3 ranks", len(sources), layout.world)
    return weights.write_model(sources, out, max_shard_bytes, None)
