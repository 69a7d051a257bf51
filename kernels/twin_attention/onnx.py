"""`TwinAttention` and `TwinAttentionInt8` as ONNX functions (domain `ownvoice.asr` v1,
standard opset-20 bodies calling `BlockAttention` and `Int8MatMul`).

The ONNX ops take each head zero-padded to the largest rank, `(heads, d_model, r)`;
`onnx_weights` turns the packed weights of the PyTorch op into that layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from onnxscript import opset20 as op
from onnxscript import script
from onnxscript.values import Opset
from torch import Tensor

from asr_app.kernels.block_attention.onnx import BlockAttention
from asr_app.kernels.domain import DOMAIN, VERSION
from asr_app.kernels.int8_matmul.onnx import Int8MatMul

ownvoice = Opset(DOMAIN, VERSION)


@script(ownvoice, default_opset=op)
def TwinAttention(X, Wq, Bq, Wk, Wv, Wo, Bo):
    """Low-rank product-twin self-attention (no mask, scale folded into Wq and Bq).

    X (B, T, D); Wq, Wk (H, D, r); Bq (H, 1, r); Wv (H, D, rv); Wo (H*rv, D); Bo (D,).
    Q = X Wq + Bq, K = X Wk, V = X Wv per head (B, H, T, r|rv);
    Y = concat_h(softmax(Q K^T) V) Wo + Bo: (B, T, D).
    """
    x = op.Unsqueeze(X, [1])  # (B, 1, T, D): one product per head by broadcasting
    q = op.MatMul(x, Wq) + Bq
    k = op.MatMul(x, Wk)
    v = op.MatMul(x, Wv)
    heads = op.Transpose(BlockAttention(q, k, v), perm=[0, 2, 1, 3])  # (B, T, H, rv)
    return op.MatMul(op.Reshape(heads, [0, 0, -1]), Wo) + Bo


@script(ownvoice, default_opset=op)
def TwinAttentionInt8(X, Wq, Sq, Bq, Wk, Sk, Wv, Sv, Wo, So, Bo):
    """TwinAttention with int8 weights: Wq, Wk, Wv, Wo int8 in the shapes above, scales
    Sq, Sk (H, 1, r), Sv (H, 1, rv), So (D,) per output column; Bq, Bo float32."""
    x = op.Unsqueeze(X, [1])
    q = Int8MatMul(x, Wq, Sq) + Bq
    k = Int8MatMul(x, Wk, Sk)
    v = Int8MatMul(x, Wv, Sv)
    heads = op.Transpose(BlockAttention(q, k, v), perm=[0, 2, 1, 3])
    return Int8MatMul(op.Reshape(heads, [0, 0, -1]), Wo, So) + Bo


def pad_heads(w: Tensor, ranks: Sequence[int], fill: float = 0.0) -> Tensor:
    """Packed per-head columns -> one zero-padded block per head.

    Args:
        w: (rows, sum(ranks)), head h's columns after those of heads 0..h-1.
        ranks: columns per head.
        fill: value of the padding (0 for weights and biases; 1 for int8 scales, as the
            exporter gives all-zero columns).
    Returns:
        (heads, rows, max(ranks)), head h's columns first in its block, `fill` after them.
    """
    width = max(ranks)
    return torch.stack(
        [
            torch.nn.functional.pad(part, (0, width - part.shape[-1]), value=fill)
            for part in w.split(list(ranks), dim=-1)
        ]
    )


def onnx_weights(
    wq: Tensor,
    bq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    *,
    ranks: Sequence[int],
    vo_ranks: Sequence[int] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The packed weights of `twin_attention` in the `TwinAttention` op's padded layout.

    Args:
        wq, bq, wk, wv, wo, ranks, vo_ranks: as `asr_app.kernels.twin_attention.twin_attention`.
    Returns:
        (Wq, Bq, Wk, Wv, Wo): Wq, Wk (heads, d_model, r), Bq (heads, 1, r),
        Wv (heads, d_model, rv), Wo (heads*rv, d_model), r / rv the largest rank; padded
        dimensions are zero, so the op computes the same function.
    """
    vo_ranks = ranks if vo_ranks is None else vo_ranks
    wo_padded = pad_heads(wo.mT, vo_ranks).transpose(1, 2)  # (heads, rv, d_model)
    return (
        pad_heads(wq, ranks),
        pad_heads(bq.unsqueeze(0), ranks),
        pad_heads(wk, ranks),
        pad_heads(wv, vo_ranks),
        wo_padded.reshape(-1, wo.shape[-1]),
    )
