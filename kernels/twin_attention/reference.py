"""Plain PyTorch math of `twin_attention` and its int8 variant, moved out of
`TwinSelfAttention.forward` unchanged (same calls in the same order, so the layer's results
are bit-for-bit what they were).

Weights are packed: head h owns a block of ranks[h] query/key columns (vo_ranks[h]
value/output ones) after those of heads 0..h-1. For the attention itself each head's block
is placed in a zero-padded (heads, max rank) layout; padded query, key and value dimensions
are zero, so they change nothing. Weights come in the ONNX op's orientation (y = x @ w):
`F.linear` gets `w.mT`, so a layer passing `nn.Linear.weight.mT` runs `nn.Linear`'s own call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from asr_app.kernels.block_attention.reference import block_attention
from asr_app.kernels.int8_matmul.reference import int8_matmul


def _slots(ranks: Sequence[int], device: torch.device) -> Tensor | None:
    """Positions of the packed dimensions in the padded (heads * max(ranks)) layout; None
    for equal ranks, where the packed layout already is the padded one."""
    width = max(ranks)
    if sum(ranks) == len(ranks) * width:
        return None
    return torch.tensor([h * width + j for h, r in enumerate(ranks) for j in range(r)], dtype=torch.long, device=device)


def split_heads(x: Tensor, heads: int, width: int, slots: Tensor | None) -> Tensor:
    """(batch, positions, packed) -> (batch, heads, positions, width), zero-padded (`_slots`)."""
    b, t, _ = x.shape
    if slots is None:  # equal ranks: no padding needed
        return x.view(b, t, heads, width).transpose(1, 2)
    full = x.new_zeros(b, t, heads * width)
    full = full.index_copy(2, slots, x)
    return full.view(b, t, heads, width).transpose(1, 2)


def merge_heads(y: Tensor, slots: Tensor | None) -> Tensor:
    """(batch, heads, positions, width) -> (batch, positions, packed), padding dropped (`_slots`)."""
    b, _, t, _ = y.shape
    y = y.transpose(1, 2).reshape(b, t, -1)
    return y if slots is None else y.index_select(2, slots)


def twin_heads(q: Tensor, k: Tensor, v: Tensor, ranks: Sequence[int], vo_ranks: Sequence[int]) -> Tensor:
    """Per-head softmax(q_h k_h^T) v_h of packed projections.

    q, k: (batch, positions, sum(ranks)); v: (batch, positions, sum(vo_ranks)) ->
    (batch, positions, sum(vo_ranks)), head h's outputs after those of heads 0..h-1.
    """
    heads, r, rv = len(ranks), max(ranks), max(vo_ranks)
    slots, vo_slots = _slots(ranks, q.device), _slots(vo_ranks, q.device)
    out = block_attention(
        split_heads(q, heads, r, slots), split_heads(k, heads, r, slots), split_heads(v, heads, rv, vo_slots)
    )
    return merge_heads(out, vo_slots)


def twin_attention(
    x: Tensor,
    wq: Tensor,
    bq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    bo: Tensor,
    ranks: Sequence[int],
    vo_ranks: Sequence[int],
) -> Tensor:
    """Shapes as `asr_app.kernels.twin_attention.twin_attention`."""
    q, k, v = F.linear(x, wq.mT, bq), F.linear(x, wk.mT), F.linear(x, wv.mT)
    return F.linear(twin_heads(q, k, v, ranks, vo_ranks), wo.mT, bo)


def twin_attention_int8(
    x: Tensor,
    wq: Tensor,
    sq: Tensor,
    bq: Tensor,
    wk: Tensor,
    sk: Tensor,
    wv: Tensor,
    sv: Tensor,
    wo: Tensor,
    so: Tensor,
    bo: Tensor,
    ranks: Sequence[int],
    vo_ranks: Sequence[int],
) -> Tensor:
    """The four projections as `int8_matmul`, the attention in float."""
    q = int8_matmul(x, wq, sq) + bq
    k, v = int8_matmul(x, wk, sk), int8_matmul(x, wv, sv)
    return int8_matmul(twin_heads(q, k, v, ranks, vo_ranks), wo, so) + bo
