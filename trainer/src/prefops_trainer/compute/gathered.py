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
