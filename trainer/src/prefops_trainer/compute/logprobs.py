"""Reference log-probs for every preference pair, in inference mode, one shard at a time.

The numbers are the sums ``DPOTrainer``'s own reference pass produces (tests compare them). What we add is
throughput. With ``keep_start`` truncation (the default) each pair runs as one packed sequence
``[prompt, chosen, rejected]`` (:mod:`.packing`): the prompt is computed once, and only completion positions
reach the LM head (TRL's own kernel, through the TRL bridge). Batches are sized by a token budget over pairs
sorted by length, so there is little padding, no per-batch cross-process gather, and the batch size is the
reference pass's own (``spec.reference``), not the training one. A model whose attention kernel takes no custom
mask (flash-attention 2) shares the prompt through a KV cache instead; a model family prefix sharing does not pack
(:mod:`..core.prefix_families`) and ``keep_end`` truncation (which can cut a pair's two prompts differently) take
TRL's layout with TRL's fused LM head.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..adapters import trl_bridge
from ..core.prefix_families import MaskPlan, verdict
from . import packing, prefix_sharing

if TYPE_CHECKING:
    import torch
    from datasets import Dataset
    from transformers import PreTrainedModel

#: One tokenized pair: ``index``, ``prompt_ids``, ``chosen_ids``, ``rejected_ids``.
Pair = dict[str, Any]


@dataclass(frozen=True)
class RefLogps:
    """One pass's numbers, columnar and ordered by row index: ``index`` (int64), ``chosen`` and ``rejected``
    (float32, the sums TRL computes in float32)."""

    index: npt.NDArray[np.int64]
    chosen: npt.NDArray[np.float32]
    rejected: npt.NDArray[np.float32]


#: The columns the pass reads, in this order.
TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
#: Rows read at a time when measuring lengths.
LENGTHS_BATCH = 10_000


def length_grouped_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Positions into ``lengths`` grouped into batches of similar length, longest first. Pure.

    Longest first means the largest batch is allocated at the start, so an out-of-memory error comes at once
    rather than at the end of a long pass.
    """
    order = longest_first(lengths).tolist()
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def longest_first(lengths: Sequence[int] | npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Positions into ``lengths``, longest first, ties in position order (no Python object per row). Pure."""
    return np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")


def pair_length(row: Pair) -> int:
    return len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))


def prepare_model(model: PreTrainedModel) -> None:
    """Patch ``model`` with TRL's fused LM head (once) and put it in eval mode."""
    trl_bridge.attach_fused_head(model)
    model.eval()


def token_lengths(rows: Dataset) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(index, lengths): every row's ``index`` and its prompt's, chosen's and rejected's token counts (rows x 3),
    read from the Arrow columns a batch at a time (a whole column at once costs hundreds of bytes a row)."""
    import pyarrow.compute as pc

    index, lengths = [], []
    for batch in rows.with_format("arrow").iter(batch_size=LENGTHS_BATCH):
        index.append(batch.column("index").to_numpy())
        lengths.append(np.stack([pc.list_value_length(batch.column(c)).to_numpy() for c in TOKEN_COLUMNS], axis=1))
    if not index:  # no rows (a process of a group with more processes than rows)
        return np.zeros(0, np.int64), np.zeros((0, len(TOKEN_COLUMNS)), np.int64)
    return np.concatenate(index).astype(np.int64), np.concatenate(lengths).astype(np.int64)


def fetch(rows: Dataset, positions: Sequence[int]) -> list[Pair]:
    """Rows ``positions`` as pairs (one batch's worth: the shard is never held as Python objects)."""
    cols = rows[list(positions)]
    keys = ("index", *TOKEN_COLUMNS)
    return [dict(zip(keys, values, strict=True)) for values in zip(*(cols[k] for k in keys), strict=True)]


def compute(
    model: PreTrainedModel,
    rows: Dataset,
    *,
    pad_token_id: int,
    max_length: int | None,
    truncation_mode: str,
    batch_size: int,
    tokens_per_batch: int | None = None,
    on_progress: Callable[[int], None] = lambda n: None,
    lockstep: Callable[[int], int] | None = None,
) -> RefLogps:
    """Sum of reference log-probs of the chosen and rejected completion of every row of ``rows``.

    ``rows`` is a tokenized dataset (``prompt_ids``, ``chosen_ids``, ``rejected_ids``, ``index``). The model
    must have gone through :func:`prepare_model`. ``on_progress`` is called with the pairs done per batch.
    Packed batches hold up to ``tokens_per_batch`` tokens (default ``batch_size`` x ``max_length``). Rows are read
    a batch at a time and the numbers kept in arrays, so memory grows by a few bytes per row, not by the rows.

    ``lockstep`` (a model ZeRO-3 partitioned over a group, whose every forward gathers weights collectively): called
    with this process's number of batches, it returns the most any process of the group has; this process then runs
    that many forwards, the last ones on a :data:`DUMMY` pair whose numbers are dropped. The prompt is then never
    shared through a KV cache, whose forwards depend on the rows.
    """
    cols = rows.select_columns(["index", *TOKEN_COLUMNS])
    index, lengths = token_lengths(cols)
    decision = prefix_sharing.decide(model)
    shared = truncation_mode == "keep_start" and verdict(model.config).packed
    out = Sums(index)
    if shared and decision.plan is not None:
        room = _keep_start_lengths(lengths, max_length).sum(axis=1)
        budget = tokens_per_batch or batch_size * (max_length or int(room.max(initial=1)))
        batches = packing.token_batches(room.tolist(), budget)
        dummies = _dummies(len(batches), lockstep)
        _packed(model, cols, batches + dummies, max_length, on_progress, decision.plan, out)
    else:
        batches = length_grouped_batches((lengths[:, 0] + lengths[:, 1:].max(axis=1)).tolist(), batch_size)
        batches += _dummies(len(batches), lockstep)
        collate = trl_bridge.preference_collator(pad_token_id, max_length, truncation_mode)
        how = (collate, pad_token_id, max_length, shared and lockstep is None)
        _unpacked(model, cols, batches, how, on_progress, out)
    return out.ordered()


#: The pair a process of a ZeRO-3 group feeds once it has run out of its own rows (``compute``'s ``lockstep``).
DUMMY: Pair = {"index": -1, "prompt_ids": [0, 0], "chosen_ids": [0], "rejected_ids": [0]}


def _dummies(mine: int, lockstep: Callable[[int], int] | None) -> list[list[int]]:
    """Batches of the :data:`DUMMY` pair (position -1) that bring this process's ``mine`` batches up to the group's
    most (none without ``lockstep``)."""
    return [[-1]] * ((lockstep(mine) if lockstep else mine) - mine)


def _fetch(cols: Dataset, batch: list[int]) -> list[Pair]:
    """A batch's pairs: rows of ``cols``, or the :data:`DUMMY` pair for a lockstep batch (``[-1]``)."""
    return [dict(DUMMY)] if batch == [-1] else fetch(cols, batch)


class Sums:
    """The pass's numbers by position into the rows, as float32 arrays."""

    def __init__(self, index: npt.NDArray[np.int64]) -> None:
        self.index = index
        self.chosen = np.zeros(len(index), dtype=np.float32)
        self.rejected = np.zeros(len(index), dtype=np.float32)

    def put(self, positions: Sequence[int], chosen: torch.Tensor, rejected: torch.Tensor) -> None:
        if list(positions) == [-1]:  # a lockstep forward's dummy pair
            return
        self.chosen[list(positions)] = chosen.float().numpy()
        self.rejected[list(positions)] = rejected.float().numpy()

    def ordered(self) -> RefLogps:
        order = np.argsort(self.index, kind="stable")
        return RefLogps(self.index[order], self.chosen[order], self.rejected[order])


def _unpacked(
    model: PreTrainedModel,
    cols: Dataset,
    batches: list[list[int]],
    how: tuple[Callable[..., Any], int, int | None, bool],
    on_progress: Callable[[int], None],
    out: Sums,
) -> None:
    """Batches of similar length in TRL's layout, or (``shared``) with the prompt in a KV cache."""
    import torch

    collate, pad_token_id, max_length, shared = how
    device = next(model.parameters()).device
    with torch.inference_mode():
        for batch in batches:
            items = _fetch(cols, batch)
            if shared:
                c, r = shared_prompt_logps(model, [_keep_start(x, max_length) for x in items], pad_token_id, device)
            else:
                c, r = forward_logps(model, collate([{k: x[k] for k in TOKEN_COLUMNS} for x in items]), device)
            out.put(batch, c, r)
            on_progress(len(items) if batch != [-1] else 0)


def packed_length(row: Pair) -> int:
    return len(row["prompt_ids"]) + len(row["chosen_ids"]) + len(row["rejected_ids"])


def _keep_start_lengths(lengths: npt.NDArray[np.int64], max_length: int | None) -> npt.NDArray[np.int64]:
    """:func:`packing.keep_start`'s lengths, for every row at once."""
    if max_length is None:
        return lengths
    room = np.maximum(max_length - lengths[:, 0], 0)
    return np.stack([lengths[:, 0], np.minimum(lengths[:, 1], room), np.minimum(lengths[:, 2], room)], axis=1)


def _packed(
    model: PreTrainedModel,
    cols: Dataset,
    batches: list[list[int]],
    max_length: int | None,
    on_progress: Callable[[int], None],
    plan: MaskPlan,
    out: Sums,
) -> None:
    """Every pair as one packed sequence, batches of them (:func:`packing.token_batches`), masked by ``plan``."""
    import torch

    head, device = trl_bridge.lm_head(model), next(model.parameters()).device
    with torch.inference_mode():
        for batch in batches:
            pairs = [packing.keep_start((x["prompt_ids"], x["chosen_ids"], x["rejected_ids"]), max_length)
                     for x in _fetch(cols, batch)]  # fmt: skip
            c, r = packing.pair_logps(model.base_model, pairs, head, device, plan)
            out.put(batch, c, r)
            on_progress(len(batch) if batch != [-1] else 0)


def _keep_start(row: Pair, max_length: int | None) -> Pair:
    """The row as TRL's collator truncates it with keep_start: completions cut to the room the prompt leaves."""
    if max_length is None:
        return row
    room = max_length - len(row["prompt_ids"])
    return {**row, "chosen_ids": row["chosen_ids"][:room], "rejected_ids": row["rejected_ids"][:room]}


def forward_logps(
    model: PreTrainedModel, inputs: dict[str, torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) summed completion log-probs for one collated batch, as TRL computes them."""
    input_ids = inputs["input_ids"].to(device)
    attention_mask = inputs["attention_mask"].to(device)
    completion_mask = inputs["completion_mask"].to(device)
    labels = input_ids.masked_fill(completion_mask == 0, -100)
    log_probs = trl_bridge.fused_log_probs(
        model, input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_cache=False
    )
    chosen, rejected = log_probs[:, -(completion_mask.size(1) - 1) :].sum(dim=1).float().cpu().chunk(2, dim=0)
    return chosen, rejected


class Throughput:
    """Pairs per second over a pass, for logs and metrics."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.done = 0

    def add(self, n: int) -> None:
        self.done += n

    @property
    def rate(self) -> float:
        return self.done / max(time.perf_counter() - self.start, 1e-9)


def shared_prompt_logps(
    model: PreTrainedModel, items: list[Pair], pad_token_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) completion log-prob sums for rows whose prompt is shared by both completions.

    The prompt (all but its last token) runs once, into a KV cache that both completions continue from; the
    continuation re-feeds the prompt's last token so TRL's fused LM head scores every completion token
    (position t predicts token t+1), and only continuation positions reach the LM head. For keep_start
    truncation this is the same sum TRL computes, with the prompt's work done once instead of twice.
    """
    import torch

    prompts = [r["prompt_ids"] for r in items]
    conts = [c for r in items for c in (r["chosen_ids"], r["rejected_ids"])]
    n, lp = len(items), max(len(p) for p in prompts) - 1
    prefix = torch.full((n, lp), pad_token_id, dtype=torch.long)
    prefix_mask = torch.zeros((n, lp), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p) > 1:
            prefix[i, lp - len(p) + 1 :] = torch.tensor(p[:-1])
            prefix_mask[i, lp - len(p) + 1 :] = 1
    lc = max(len(c) for c in conts) + 1
    cont = torch.full((2 * n, lc), pad_token_id, dtype=torch.long)
    labels = torch.full((2 * n, lc), -100, dtype=torch.long)
    cont_mask = torch.zeros((2 * n, lc), dtype=torch.long)
    for j, c in enumerate(conts):
        cont[j, 0] = prompts[j // 2][-1]
        cont[j, 1 : len(c) + 1] = torch.tensor(c)
        labels[j, 1 : len(c) + 1] = torch.tensor(c)
        cont_mask[j, : len(c) + 1] = 1
    prefix, prefix_mask = prefix.to(device), prefix_mask.to(device)
    cont, labels, cont_mask = cont.to(device), labels.to(device), cont_mask.to(device)
    cache = None
    if lp > 0:
        positions = (prefix_mask.cumsum(1) - 1).clamp(min=0)
        unwrap = getattr(model, "get_base_model", None)  # a PEFT model: run the base model's backbone
        out: Any = unwrap() if unwrap is not None else model
        cache = out.base_model(
            input_ids=prefix, attention_mask=prefix_mask, position_ids=positions, use_cache=True
        ).past_key_values
        cache.batch_repeat_interleave(2)
    start = prefix_mask.sum(1).repeat_interleave(2).unsqueeze(1)
    positions = start + torch.arange(lc, device=device).unsqueeze(0)
    mask = torch.cat([prefix_mask.repeat_interleave(2, dim=0), cont_mask], dim=1) if lp > 0 else cont_mask
    log_probs = trl_bridge.fused_log_probs(
        model, input_ids=cont, attention_mask=mask, position_ids=positions, past_key_values=cache, labels=labels
    )
    sums = log_probs.double().sum(dim=1).float().cpu()
    return sums[0::2], sums[1::2]
