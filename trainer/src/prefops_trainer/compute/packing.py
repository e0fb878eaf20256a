"""Prefix sharing: each preference pair as one sequence ``[prompt, chosen, rejected]``, the prompt computed once.

TRL scores a pair as two sequences, ``[prompt, chosen]`` and ``[prompt, rejected]``, so every prompt token goes
through the model twice, forward and backward. Packed, the pair is one sequence in which

* the rejected tokens do not see the chosen tokens (a 4D attention mask, or a flex-attention block mask), and
* position ids restart after the prompt, so a rejected token sits at the position it has in TRL's sequence.

Each completion token then sees exactly the keys, at exactly the positions, it sees in TRL's layout, so its
hidden state is the same up to float rounding, and the prompt's work is done once. The first token of both
completions is predicted from the prompt's last position, which is scored twice (once per completion).

Only completion positions reach the LM head: the hidden states are gathered at the positions that predict a
completion token and only those rows are projected (``head``), on every device. (TRL's fused head skips prompt
positions only on Triton devices; on CPU it projects every position.)

Pure torch: the LM-head kernel is passed in (``head``), so nothing here imports TRL.
``tests/trainer/test_packing.py`` checks packed log-probs, losses and gradients against TRL's own forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from ..core.prefix_families import MaskPlan

#: Segment codes of a packed row.
PAD, PROMPT, CHOSEN, REJECTED = 0, 1, 2, 3

#: (hidden states at the scored positions [N, H], their target ids [N]) -> per-token fields, each [N] or None
Head = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor | None]]

Pair = tuple[Sequence[int], Sequence[int], Sequence[int]]

#: One causal mask for every layer, no window (Llama's plan).
ONE_MASK = MaskPlan(False, {"": None})


@dataclass(frozen=True)
class Packed:
    """Pairs laid out as packed rows, and where each completion token is scored.

    Row fields are ``[rows, T]``; the per-token fields (``score_row`` ... ``unpacked_col``) have one entry per
    scored completion token, chosen and rejected alike.
    """

    input_ids: torch.Tensor  # [rows, T]
    position_ids: torch.Tensor  # [rows, T]
    segment: torch.Tensor  # [rows, T] PAD / PROMPT / CHOSEN / REJECTED
    document: torch.Tensor  # [rows, T] which pair of its row a token belongs to; -1 on padding
    score_row: torch.Tensor  # [N] row of the position that predicts the token
    score_col: torch.Tensor  # [N] column of that position
    target: torch.Tensor  # [N] the token predicted
    pair: torch.Tensor  # [N] the pair (its index in the input order)
    side: torch.Tensor  # [N] 0 chosen, 1 rejected
    unpacked_col: torch.Tensor  # [N] the predicting position in the pair's own [prompt, completion] sequence
    n_pairs: int

    def to(self, device: torch.device | str) -> Packed:
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self) if f.name != "n_pairs"}
        return Packed(**moved, n_pairs=self.n_pairs)

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens."""
        return int((self.segment != PAD).sum())


def pack(pairs: Sequence[Pair], pad_token_id: int, rows: Sequence[Sequence[int]] | None = None) -> Packed:
    """Lay out ``(prompt, chosen, rejected)`` token lists as packed rows, padded on the right.

    ``rows`` lists which pairs share each row (several pairs per row pay only with a kernel that skips masked
    blocks, such as flex attention); by default each pair has a row of its own. Completion token ``j`` is
    predicted by the prompt's last position when ``j == 0``, else by completion token ``j - 1``; with an empty
    prompt the first completion token has no predictor and is not scored, as in TRL.
    """
    rows = [[i] for i in range(len(pairs))] if rows is None else rows
    width = max(sum(len(p) + len(c) + len(r) for p, c, r in (pairs[i] for i in row)) for row in rows)
    shape = (len(rows), max(width, 1))
    layout = {
        "input_ids": torch.full(shape, pad_token_id, dtype=torch.long),
        "position_ids": torch.zeros(shape, dtype=torch.long),
        "segment": torch.full(shape, PAD, dtype=torch.long),
        "document": torch.full(shape, -1, dtype=torch.long),
    }
    scored: list[tuple[int, ...]] = []
    for r, row in enumerate(rows):
        at = 0
        for k, i in enumerate(row):
            prompt, chosen, rejected = pairs[i]
            prompt_end = _place(layout, r, at, prompt, 0, PROMPT, k)
            chosen_end = _place(layout, r, prompt_end, chosen, len(prompt), CHOSEN, k)
            at = _place(layout, r, chosen_end, rejected, len(prompt), REJECTED, k)
            scored += _scored(r, prompt_end, prompt_end, len(prompt), chosen, i, 0)
            scored += _scored(r, chosen_end, prompt_end, len(prompt), rejected, i, 1)
    s = torch.tensor(scored, dtype=torch.long).reshape(-1, 6).T
    return Packed(**layout, score_row=s[0], score_col=s[1], target=s[2], pair=s[3], side=s[4], unpacked_col=s[5],
                  n_pairs=len(pairs))  # fmt: skip


def _place(
    layout: dict[str, torch.Tensor], row: int, at: int, tokens: Sequence[int], first: int, segment: int, doc: int
) -> int:
    """Write one segment into ``row`` from column ``at``, positions from ``first``; return the column after it."""
    end = at + len(tokens)
    layout["input_ids"][row, at:end] = torch.as_tensor(list(tokens), dtype=torch.long)
    layout["position_ids"][row, at:end] = torch.arange(first, first + len(tokens))
    layout["segment"][row, at:end] = segment
    layout["document"][row, at:end] = doc
    return end


def _scored(
    row: int, start: int, prompt_end: int, prompt_len: int, tokens: Sequence[int], pair: int, side: int
) -> list[tuple[int, ...]]:
    """(row, predicting col, target, pair, side, unpacked predicting col) for each scored token of a completion
    placed from column ``start``; the prompt ends before column ``prompt_end``."""
    out: list[tuple[int, ...]] = []
    for j, token in enumerate(tokens):
        if j == 0 and prompt_len == 0:
            continue  # nothing precedes it
        col = prompt_end - 1 if j == 0 else start + j - 1
        out.append((row, col, int(token), pair, side, prompt_len + j - 1))
    return out


def unpack_concatenated(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> list[Pair] | None:
    """The pairs of a batch in TRL's concatenated layout (rows ``[chosen..., rejected...]``, right-padded, labels
    -100 outside the completions), or None when a pair's two rows do not share their prompt (``keep_end``
    truncation can cut them differently): such a batch is not packed."""
    n = input_ids.size(0) // 2
    lengths = attention_mask.sum(dim=1).tolist()
    completion = (labels != -100).int()
    starts, counts = completion.argmax(dim=1).tolist(), completion.sum(dim=1).tolist()
    if any(c == 0 or s + c != length for s, c, length in zip(starts, counts, lengths, strict=True)):
        return None  # not one completion running to the row's end: not a layout we know how to pack
    ids = input_ids.tolist()
    pairs = []
    for i in range(n):
        a, b = ids[i], ids[n + i]
        p = starts[i]
        if starts[n + i] != p or a[:p] != b[:p]:
            return None
        pairs.append((a[:p], a[p : lengths[i]], b[p : lengths[n + i]]))
    return pairs


def allowed(packed: Packed, window: int | None = None) -> torch.Tensor:
    """``[rows, 1, T, T]`` bool, True where a query (dim 2) may attend to a key (dim 3).

    Causal, within a pair, never onto padding, and never from a rejected token onto a chosen one; with ``window``
    (a sliding-window layer's), only onto keys fewer than ``window`` positions back, as transformers' window rule
    (checked by the TRL bridge) has it in TRL's layout. Every position sees itself, so padding rows stay finite
    (their outputs are never scored).
    """
    seg, doc, pos = packed.segment, packed.document, packed.position_ids
    t = seg.size(1)
    causal = torch.ones(t, t, dtype=torch.bool, device=seg.device).tril()
    same_pair = doc[:, :, None] == doc[:, None, :]
    rejected_onto_chosen = (seg[:, :, None] == REJECTED) & (seg[:, None, :] == CHOSEN)
    ok = causal & same_pair & (seg[:, None, :] != PAD) & ~rejected_onto_chosen
    if window is not None:
        ok &= pos[:, :, None] - pos[:, None, :] < window
    return (ok | torch.eye(t, dtype=torch.bool, device=seg.device))[:, None]


def attention_mask(packed: Packed, attn_implementation: str, dtype: torch.dtype, plan: MaskPlan | None = None) -> Any:
    """The masks the model takes under ``plan`` (default: one causal mask for every layer): one mask, or
    ``{layer type: mask}``. Each is in the form the attention kernel takes: bool for ``sdpa``, additive (0 / dtype's
    minimum) for ``eager``, a ``BlockMask`` for ``flex_attention`` (whose kernel skips the masked blocks: the CUDA
    path). Other kernels (flash-attention 2 reads only padding, never a custom mask) cannot run it."""
    plan = plan or ONE_MASK
    masks = {key: _mask(packed, attn_implementation, dtype, window) for key, window in plan.layers.items()}
    return masks if plan.by_layer_type else masks[""]


def _mask(packed: Packed, attn_implementation: str, dtype: torch.dtype, window: int | None) -> Any:
    if attn_implementation == "flex_attention":
        return block_mask(packed, window)
    ok = allowed(packed, window)
    if attn_implementation == "sdpa":
        return ok
    if attn_implementation == "eager":
        return torch.zeros(ok.shape, dtype=dtype, device=ok.device).masked_fill(~ok, torch.finfo(dtype).min)
    raise ValueError(f"prefix sharing needs an attention kernel that takes a custom mask, not {attn_implementation!r}")


def block_mask(packed: Packed, window: int | None = None) -> Any:
    """A flex-attention ``BlockMask`` with the rule of :func:`allowed`; fully masked blocks are skipped."""
    from torch.nn.attention.flex_attention import create_block_mask

    seg, doc, pos = packed.segment, packed.document, packed.position_ids
    reach = window if window is not None else seg.size(1) + 1

    def rule(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        hidden = (seg[b, q] == REJECTED) & (seg[b, k] == CHOSEN)
        visible = (k <= q) & (doc[b, q] == doc[b, k]) & (seg[b, k] != PAD) & ~hidden
        return (visible & (pos[b, q] - pos[b, k] < reach)) | (q == k)

    rows, t = seg.shape
    return create_block_mask(rule, rows, None, t, t, device=seg.device)


def supported(attn_implementation: str) -> bool:
    return attn_implementation in ("sdpa", "eager", "flex_attention")


def forward(backbone: Any, packed: Packed, mask: Any, head: Head) -> dict[str, torch.Tensor | None]:
    """Run ``backbone`` (the model without its LM head) over the packed rows and ``head`` over the hidden states
    of the positions that predict completion tokens only. Returns ``head``'s per-token fields, each ``[N]``."""
    out = backbone(input_ids=packed.input_ids, attention_mask=mask, position_ids=packed.position_ids, use_cache=False)
    hidden = out.last_hidden_state[packed.score_row, packed.score_col]
    return head(hidden, packed.target)


def pair_logps(
    backbone: Any, pairs: Sequence[Pair], head: Head, device: torch.device | str, plan: MaskPlan | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs (chosen [pairs], rejected [pairs], float32 on the CPU) of ``pairs``, one packed
    row each, through ``backbone`` (the model without its LM head) and ``head``, with the masks of ``plan``."""
    packed = pack(pairs, pad_token_id=0).to(device)
    param = next(backbone.parameters())
    mask = attention_mask(packed, backbone.config._attn_implementation, param.dtype, plan)
    log_probs = forward(backbone, packed, mask, head)["log_probs"]
    assert log_probs is not None, "the head always computes log_probs"
    chosen, rejected = sums(log_probs, packed)
    return chosen.float().cpu(), rejected.float().cpu()


def to_concatenated(values: torch.Tensor | None, packed: Packed, width: int) -> torch.Tensor | None:
    """Per-token ``values`` [N] placed where TRL's concatenated layout has them: ``[2 * pairs, width]``, chosen rows
    first, the value of the token predicted at position ``t`` in column ``t``, zero elsewhere. Differentiable."""
    if values is None:
        return None
    rows = packed.pair + packed.side * packed.n_pairs
    out = values.new_zeros((2 * packed.n_pairs, width))
    return out.index_put((rows, packed.unpacked_col), values)


def sums(values: torch.Tensor, packed: Packed) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair sums of per-token ``values`` [N], accumulated in float64: (chosen [pairs], rejected [pairs])."""
    total = torch.zeros(2 * packed.n_pairs, dtype=torch.float64, device=values.device)
    total.index_add_(0, packed.pair * 2 + packed.side, values.double())
    return total[0::2], total[1::2]


def keep_start(pair: Pair, max_length: int | None) -> Pair:
    """The pair as TRL's collator truncates it with ``keep_start``: each completion cut to the room the prompt
    leaves (the prompt alone never fills ``max_length``: tokenization refuses such rows)."""
    prompt, chosen, rejected = pair
    if max_length is None:
        return pair
    room = max(max_length - len(prompt), 0)
    return prompt, chosen[:room], rejected[:room]


def token_batches(lengths: Sequence[int], max_tokens: int, max_rows: int | None = None) -> list[list[int]]:
    """Positions into ``lengths`` grouped into batches of at most ``max_tokens`` padded tokens (rows x the longest
    row) and ``max_rows`` rows, longest first so the largest batch comes first. A row longer than the budget gets a
    batch of its own. Pure."""
    import numpy as np

    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable").tolist()  # ties in position order
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        if batch and (len(batch) + 1) * lengths[batch[0]] <= max_tokens and len(batch) < (max_rows or len(lengths)):
            batch.append(i)
        else:
            batches.append([i])
    return batches
