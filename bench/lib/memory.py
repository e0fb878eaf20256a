"""Measuring what the train phase really allocates, per component, on the CPU: the accuracy side of the planner.

One measurement runs the trainer's own train phase (``prefops_trainer.phases.train.run``) in this process under
``torch.profiler`` with ``profile_memory=True``: every allocation and free of torch's CPU allocator is recorded with
the allocator's running total (``total_allocated``), so the phase's peak is the largest total seen, a real allocator
counter rather than the process's RSS. Besides the total, each component is measured where it lives:

* weights, adapters, gradients and optimizer states: the bytes of the tensors themselves (unique storages), when
  they exist (gradients just before the optimizer step, states just after it);
* activations: what autograd saves for backward during a step (``torch.autograd.graph.saved_tensors_hooks``,
  unique storages that are not parameters);
* the LM head: the allocator's rise inside TRL's chunked log-prob kernel, forward and backward (ranges marked with
  ``torch.profiler.record_function``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Measured:
    weights: int = 0
    adapters: int = 0
    gradients: int = 0
    optimizer: int = 0
    saved: int = 0
    head_forward: int = 0
    head_backward: int = 0
    peak: int = 0
    extras: dict[str, Any] = field(default_factory=dict)


def _storage_bytes(tensors: Iterator[Any]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


class Probe:
    """Instruments one trainer: its parameters, gradients, optimizer states and saved activations."""

    def __init__(self, measured: Measured) -> None:
        self.m = measured

    def attach(self, trainer: Any) -> None:
        from transformers import TrainerCallback

        probe = self

        class _Callback(TrainerCallback):  # type: ignore[misc]
            def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                grads = (p.grad for p in trainer.model.parameters() if p.grad is not None)
                probe.m.gradients = max(probe.m.gradients, _storage_bytes(grads))

            def on_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                probe.m.optimizer = max(probe.m.optimizer, probe.optimizer_bytes(trainer.optimizer))

        trainer.add_callback(_Callback())
        params = list(trainer.model.parameters())
        self.m.extras["param_storages"] = {st.data_ptr(): st.nbytes() for st in (p.untyped_storage() for p in params)}
        self.m.adapters = _storage_bytes(p for p in params if p.requires_grad and _is_adapter(p, trainer.model))
        self.m.weights = _storage_bytes(p for p in params if not _is_adapter(p, trainer.model))
        original = trainer.compute_loss

        def compute_loss(model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            with self.saved(model):
                return original(model, inputs, *args, **kwargs)

        trainer.compute_loss = compute_loss

    @staticmethod
    def optimizer_bytes(optimizer: Any) -> int:
        import torch

        tensors = (v for state in optimizer.state.values() for v in state.values()
                   if isinstance(v, torch.Tensor) and v.numel() > 1)  # fmt: skip
        return _storage_bytes(tensors)

    @contextlib.contextmanager
    def saved(self, model: Any) -> Iterator[None]:
        import torch

        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen: dict[int, int] = {}

        def pack(t: Any) -> Any:
            st = t.untyped_storage()
            if st.data_ptr() not in params:
                seen[st.data_ptr()] = st.nbytes()
            return t

        with (
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
            torch.profiler.record_function("planner::compute_loss"),
        ):
            yield
        self.m.saved = max(self.m.saved, sum(seen.values()))
        self.m.extras.setdefault("saved_calls", []).append(sum(seen.values()))


_ADAPTER_IDS: dict[int, set[int]] = {}


def _is_adapter(p: Any, model: Any) -> bool:
    ids = _ADAPTER_IDS.get(id(model))
    if ids is None:
        ids = _ADAPTER_IDS[id(model)] = {id(q) for n, q in model.named_parameters() if "lora_" in n}
    return id(p) in ids


@contextlib.contextmanager
def marked_head() -> Iterator[None]:
    """Mark TRL's chunked log-prob kernel's forward and backward as profiler ranges."""
    import torch

    from prefops_trainer.adapters import trl_bridge

    F = trl_bridge.head_kernel_function()

    forward, backward = F.forward, F.backward

    def fwd(*args: Any, **kwargs: Any) -> Any:
        with torch.profiler.record_function("planner::head_forward"):
            return forward(*args, **kwargs)

    def bwd(*args: Any, **kwargs: Any) -> Any:
        with torch.profiler.record_function("planner::head_backward"):
            return backward(*args, **kwargs)

    F.forward, F.backward = staticmethod(fwd), staticmethod(bwd)  # type: ignore[method-assign]
    try:
        yield
    finally:
        F.forward, F.backward = staticmethod(forward), staticmethod(backward)  # type: ignore[method-assign]


def allocator_summary(prof: Any, measured: Measured) -> None:
    """The peak of the allocator's running total, and its largest rise inside each marked range."""
    from torch._C._profiler import _EventType

    nodes = list(_walk(prof.profiler.kineto_results.experimental_event_tree()))
    allocs = sorted((n.start_time_ns, n.extra_fields.total_allocated) for n in nodes
                    if n.tag == _EventType.Allocation and str(n.extra_fields.device) == "cpu")  # fmt: skip
    measured.peak = max((total for _, total in allocs), default=0)
    # Weights the allocator never saw (safetensors loads CPU weights as views of the memory-mapped file) are alive
    # all along: they count on top of its running total.
    allocated = {n.extra_fields.ptr for n in nodes if n.tag == _EventType.Allocation and n.extra_fields.alloc_size > 0}
    storages = measured.extras.pop("param_storages", {})
    outside = sum(size for ptr, size in storages.items() if ptr not in allocated)
    measured.extras["weights_outside_allocator"] = outside
    measured.peak += outside
    for name, attr in (("planner::head_forward", "head_forward"), ("planner::head_backward", "head_backward")):
        rise, base = 0, 0
        measured.extras[f"{attr}_calls"] = sum(n.name == name for n in nodes)
        for n in nodes:
            if n.name == name:
                r, b = _rise(allocs, n.start_time_ns, n.end_time_ns)
                rise, base = max((rise, base), (r, b))
        setattr(measured, attr, rise)
        measured.extras[f"{attr}_base"] = base


def span(prof: Any, name: str) -> list[tuple[int, int]]:
    """(allocator total at the start, at the end) of every range ``name``."""
    from torch._C._profiler import _EventType

    nodes = list(_walk(prof.profiler.kineto_results.experimental_event_tree()))
    allocs = sorted((n.start_time_ns, n.extra_fields.total_allocated) for n in nodes if n.tag == _EventType.Allocation)
    out = []
    for n in nodes:
        if n.name == name:
            before = [t for ts, t in allocs if ts < n.start_time_ns]
            after = [t for ts, t in allocs if ts <= n.end_time_ns]
            out.append((before[-1] if before else 0, after[-1] if after else 0))
    return out


def _rise(allocs: list[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """(the allocator's largest rise within [start, end], its total just before start)."""
    before = 0
    peak = None
    for t, total in allocs:
        if t < start:
            before = total
        elif t <= end:
            peak = total if peak is None else max(peak, total)
    return max((peak or before) - before, 0), before


def _walk(nodes: Any) -> Iterator[Any]:
    for n in nodes:
        yield n
        yield from _walk(n.children)


@contextlib.contextmanager
def cuda_head_rises(measured: Measured) -> Iterator[None]:
    """On a CUDA device: the allocator's rise inside TRL's LM-head kernel, forward and backward, from
    ``torch.cuda.max_memory_allocated`` (the peak is read before each reset, so the phase's own peak is kept in
    ``measured.extras['peak_before_resets']``)."""
    import torch

    from prefops_trainer.adapters import trl_bridge

    F = trl_bridge.head_kernel_function()
    forward, backward = F.forward, F.backward

    def rise(call: Any, attr: str, *args: Any, **kwargs: Any) -> Any:
        measured.extras["peak_before_resets"] = max(
            measured.extras.get("peak_before_resets", 0), torch.cuda.max_memory_allocated()
        )
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = call(*args, **kwargs)
        setattr(measured, attr, max(getattr(measured, attr), torch.cuda.max_memory_allocated() - before))
        return out

    F.forward = staticmethod(lambda *a, **k: rise(forward, "head_forward", *a, **k))  # type: ignore[method-assign]
    F.backward = staticmethod(lambda *a, **k: rise(backward, "head_backward", *a, **k))  # type: ignore[method-assign]
    try:
        yield
    finally:
        F.forward, F.backward = staticmethod(forward), staticmethod(backward)  # type: ignore[method-assign]
