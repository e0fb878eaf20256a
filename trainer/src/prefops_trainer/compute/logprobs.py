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
    index: list[int]
    chosen: list[float]
    rejected: list[float]


def length_grouped_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Positions into ``lengths`` grouped into batches of similar length, longest first. Pure.

    Longest first means the largest batch is allocated at the start, so an out-of-memory error comes at once
    rather than at the end of a long pass.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pair_length(row: Pair) -> int:
    return len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))


def prepare_model(model: PreTrainedModel) -> None:
    """Patch ``model`` with TRL's fused LM head (once) and put it in eval mode."""
    trl_bridge.attach_fused_head(model)
    model.eval()


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
) -> RefLogps:
    """Sum of reference log-probs of the chosen and rejected completion of every row of ``rows``.

    ``rows`` is a tokenized dataset (``prompt_ids``, ``chosen_ids``, ``rejected_ids``, ``index``). The model
    must have gone through :func:`prepare_model`. ``on_progress`` is called with the pairs done per batch.
    Packed batches hold up to ``tokens_per_batch`` tokens (default ``batch_size`` x ``max_length``).
    """
    import torch

    collate = trl_bridge.preference_collator(pad_token_id, max_length, truncation_mode)
    device = next(model.parameters()).device
    cols = rows.select_columns(["index", "prompt_ids", "chosen_ids", "rejected_ids"])
    examples = cols.to_list()
    decision = prefix_sharing.decide(model)
    shared = truncation_mode == "keep_start" and verdict(model.config).packed
    if shared and decision.plan is not None:
        budget = tokens_per_batch or batch_size * (max_length or max(map(packed_length, examples)))
        return _packed(model, examples, max_length, budget, on_progress, decision.plan)
    batches = length_grouped_batches([pair_length(r) for r in examples], batch_size)
    chosen: dict[int, float] = {}
    rejected: dict[int, float] = {}
    with torch.inference_mode():
        for batch in batches:
            items = [examples[i] for i in batch]
            if shared:
                c, r = shared_prompt_logps(model, [_keep_start(x, max_length) for x in items], pad_token_id, device)
            else:
                keys = ("prompt_ids", "chosen_ids", "rejected_ids")
                c, r = forward_logps(model, collate([{k: x[k] for k in keys} for x in items]), device)
            for item, cv, rv in zip(items, c.tolist(), r.tolist(), strict=True):
                chosen[item["index"]] = cv
                rejected[item["index"]] = rv
            on_progress(len(items))
    order = sorted(chosen)
    return RefLogps(order, [chosen[i] for i in order], [rejected[i] for i in order])


def packed_length(row: Pair) -> int:
    return len(row["prompt_ids"]) + len(row["chosen_ids"]) + len(row["rejected_ids"])


def _packed(
    model: PreTrainedModel,
    examples: list[Pair],
    max_length: int | None,
    tokens_per_batch: int,
    on_progress: Callable[[int], None],
    plan: MaskPlan,
) -> RefLogps:
    """Every pair as one packed sequence, in batches of at most ``tokens_per_batch`` tokens, masked by ``plan``."""
    import torch

    pairs = [packing.keep_start((x["prompt_ids"], x["chosen_ids"], x["rejected_ids"]), max_length) for x in examples]
    head, device = trl_bridge.lm_head(model), next(model.parameters()).device
    chosen, rejected = [0.0] * len(pairs), [0.0] * len(pairs)
    with torch.inference_mode():
        for batch in packing.token_batches([sum(map(len, p)) for p in pairs], tokens_per_batch):
            c, r = packing.pair_logps(model.base_model, [pairs[i] for i in batch], head, device, plan)
            for i, cv, rv in zip(batch, c.tolist(), r.tolist(), strict=True):
                chosen[i], rejected[i] = cv, rv
            on_progress(len(batch))
    order = sorted(range(len(examples)), key=lambda i: examples[i]["index"])
    return RefLogps([examples[i]["index"] for i in order], [chosen[i] for i in order], [rejected[i] for i in order])


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
