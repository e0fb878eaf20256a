"""Reference log-probs for every preference pair, in inference mode, one shard at a time.

The numbers are the sums TRL's ``DPOTrainer.compute_ref_log_probs`` produces (tests compare them). What we add
is throughput. With ``keep_start`` truncation (the default) each pair runs as one packed sequence
``[prompt, chosen, rejected]`` (``compute/packing.py``): the prompt is computed once and only completion
positions reach the LM head (TRL's own kernel). Batches are sized by a token budget over pairs sorted by length,
so there is little padding, no per-batch cross-process gather, and the batch size is the reference pass's own
(``spec.reference``), not the training one. A model whose attention kernel takes no custom mask (flash-attention
2) shares the prompt through a KV cache instead; ``keep_end`` truncation (which can cut a pair's two prompts
differently) takes TRL's layout with TRL's fused LM head.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .compute import packing

log = logging.getLogger(__name__)


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


def pair_length(row) -> int:
    return len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))


def prepare_model(model) -> None:
    """Patch ``model`` with TRL's fused LM head (once) and put it in eval mode."""
    from trl.trainer.utils import add_fused_lm_head

    if not getattr(model, "_prefops_fused", False):
        add_fused_lm_head(model)
        model._prefops_fused = True
    model.eval()


def compute(
    model,
    rows,
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
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    collate = DataCollatorForPreference(
        pad_token_id=pad_token_id, max_length=max_length, truncation_mode=truncation_mode
    )
    device = next(model.parameters()).device
    cols = rows.select_columns(["index", "prompt_ids", "chosen_ids", "rejected_ids"])
    examples = cols.to_list()
    shared = truncation_mode == "keep_start"
    attn = model.config._attn_implementation
    if shared and packing.supported(attn):
        return _packed(model, examples, max_length, tokens_per_batch or batch_size * (max_length or 4096), on_progress)
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


def _packed(model, examples, max_length, tokens_per_batch: int, on_progress) -> RefLogps:
    """Every pair as one packed sequence, in batches of at most ``tokens_per_batch`` tokens."""
    import torch

    from . import trl_packing

    pairs = [packing.keep_start((x["prompt_ids"], x["chosen_ids"], x["rejected_ids"]), max_length) for x in examples]
    head, device = trl_packing.lm_head(model), next(model.parameters()).device
    chosen, rejected = [0.0] * len(pairs), [0.0] * len(pairs)
    with torch.inference_mode():
        for batch in packing.token_batches([sum(map(len, p)) for p in pairs], tokens_per_batch):
            c, r = packing.pair_logps(model.base_model, [pairs[i] for i in batch], head, device)
            for i, cv, rv in zip(batch, c.tolist(), r.tolist(), strict=True):
                chosen[i], rejected[i] = cv, rv
            on_progress(len(batch))
    order = sorted(range(len(examples)), key=lambda i: examples[i]["index"])
    return RefLogps([examples[i]["index"] for i in order], [chosen[i] for i in order], [rejected[i] for i in order])


def _keep_start(row, max_length: int | None):
    """The row as TRL's collator truncates it with keep_start: completions cut to the room the prompt leaves."""
    if max_length is None:
        return row
    room = max_length - len(row["prompt_ids"])
    return {**row, "chosen_ids": row["chosen_ids"][:room], "rejected_ids": row["rejected_ids"][:room]}


def forward_logps(model, inputs, device):
    """(chosen, rejected) summed completion log-probs for one collated batch, as TRL computes them."""
    input_ids = inputs["input_ids"].to(device)
    attention_mask = inputs["attention_mask"].to(device)
    completion_mask = inputs["completion_mask"].to(device)
    labels = input_ids.masked_fill(completion_mask == 0, -100)
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True, use_cache=False)
    per_token = out.log_probs[:, -(completion_mask.size(1) - 1) :]
    return per_token.sum(dim=1).float().cpu().chunk(2, dim=0)


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


def shared_prompt_logps(model, items, pad_token_id: int, device):
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
        out = model.get_base_model() if hasattr(model, "get_base_model") else model
        cache = out.base_model(
            input_ids=prefix, attention_mask=prefix_mask, position_ids=positions, use_cache=True
        ).past_key_values
        cache.batch_repeat_interleave(2)
    start = prefix_mask.sum(1).repeat_interleave(2).unsqueeze(1)
    positions = start + torch.arange(lc, device=device).unsqueeze(0)
    mask = torch.cat([prefix_mask.repeat_interleave(2, dim=0), cont_mask], dim=1) if lp > 0 else cont_mask
    result = model(
        input_ids=cont,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        labels=labels,
        fused_lm_head=True,
    )
    sums = result.log_probs.double().sum(dim=1).float().cpu()
    return sums[0::2], sums[1::2]
