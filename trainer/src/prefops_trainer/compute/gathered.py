"""A forward pass on a model whose weights DeepSpeed ZeRO-3 partitioned across the ranks as they loaded, outside
DeepSpeed's engine (which does not exist yet before the trainer is built): each module's own parameters are gathered
just before it runs and partitioned again right after it, so a rank holds one module's full weights at a time, as
the engine does. The gathers are collective: every rank must run the same forward passes. Without ZeRO-3 this
changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def partition_on_load(config: dict[str, Any]) -> object:
    """From now on, while the object returned lives, transformers loads models partitioned over the process group by
    ZeRO-3 (``config``, a DeepSpeed configuration of stage 3), each process holding a slice of every weight."""
    from transformers.integrations.deepspeed import HfDeepSpeedConfig

    return HfDeepSpeedConfig(config)


def held_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(elements this process holds, elements of the whole model): a model ZeRO-3 partitioned holds a slice."""
    held = total = 0
    for p in model.parameters():
        whole = int(getattr(p, "ds_numel", p.numel()))
        held += int(p.ds_tensor.numel()) if hasattr(p, "ds_tensor") else whole
        total += whole
    return held, total


def zero3_partitioned() -> bool:
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    return bool(is_deepspeed_zero3_enabled())


@contextmanager
def module_by_module(model: torch.nn.Module) -> Iterator[None]:
    """Within this context, forward passes of ``model`` work on ZeRO-3-partitioned weights."""
    if not zero3_partitioned():
        yield
        return
    import deepspeed
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    entered: dict[int, list[AbstractContextManager[Any]]] = {}

    def gather(module: torch.nn.Module, args: Any) -> None:
        mine = module.parameters(recurse=False)
        params = [p for p in mine if getattr(p, "ds_status", None) == ZeroParamStatus.NOT_AVAILABLE]
        ctx = deepspeed.zero.GatheredParameters(params, modifier_rank=None)
        ctx.__enter__()
        entered.setdefault(id(module), []).append(ctx)

    def release(module: torch.nn.Module, args: Any, output: Any) -> None:
        entered[id(module)].pop().__exit__(None, None, None)

    owners = [m for m in model.modules() if next(m.parameters(recurse=False), None) is not None]
    hooks = [h for m in owners for h in (m.register_forward_pre_hook(gather), m.register_forward_hook(release))]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()
