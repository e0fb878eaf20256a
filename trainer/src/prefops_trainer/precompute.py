"""Reference log-probs for every preference pair, in inference mode, one shard at a time.

The forward pass is TRL's own fused LM head (``trl.trainer.utils.add_fused_lm_head``): it projects only
the completion positions through the LM head, in tiles, and returns per-token log-probs, so the sums equal
what ``DPOTrainer.compute_ref_log_probs`` produces. What we add is throughput: batches are grouped by
length (far less padding than TRL's dataset-order batches), there is no per-batch cross-process gather, and
the batch size is the reference pass's own (``spec.reference.batchSize``), not the training one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
    on_progress: Callable[[int], None] = lambda n: None,
) -> RefLogps:
    """Sum of reference log-probs of the chosen and rejected completion of every row of ``rows``.

    ``rows`` is a tokenized dataset (``prompt_ids``, ``chosen_ids``, ``rejected_ids``, ``index``). The model
    must have gone through :func:`prepare_model`. ``on_progress`` is called with the pairs done per batch.
    """
    import torch
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    collate = DataCollatorForPreference(
        pad_token_id=pad_token_id, max_length=max_length, truncation_mode=truncation_mode
    )
    device = next(model.parameters()).device
    cols = rows.select_columns(["index", "prompt_ids", "chosen_ids", "rejected_ids"])
    examples = cols.to_list()
    batches = length_grouped_batches([pair_length(r) for r in examples], batch_size)
    chosen: dict[int, float] = {}
    rejected: dict[int, float] = {}
    with torch.inference_mode():
        for batch in batches:
            items = [examples[i] for i in batch]
            inputs = collate([{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for r in items])
            c, r = forward_logps(model, inputs, device)
            for item, cv, rv in zip(items, c.tolist(), r.tolist(), strict=True):
                chosen[item["index"]] = cv
                rejected[item["index"]] = rv
            on_progress(len(items))
    order = sorted(chosen)
    return RefLogps(order, [chosen[i] for i in order], [rejected[i] for i in order])


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
