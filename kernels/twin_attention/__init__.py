"""`twin_attention`: encoder self-attention with per-head low-rank product twins
(own ops `TwinAttention`, `TwinAttentionInt8`)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from asr_app.kernels.backend import resolve_backend
from asr_app.kernels.twin_attention import reference
from asr_app.kernels.twin_attention.reference import twin_heads


def _check_ranks(wq: Tensor, wv: Tensor, ranks: Sequence[int], vo_ranks: Sequence[int] | None) -> list[int]:
    vo_ranks = list(ranks) if vo_ranks is None else list(vo_ranks)
    if not ranks or len(vo_ranks) != len(ranks) or min(*ranks, *vo_ranks) < 1:
        raise ValueError(f"ranks and vo_ranks need one positive entry per head, got {list(ranks)} and {vo_ranks}")
    if wq.shape[-1] != sum(ranks) or wv.shape[-1] != sum(vo_ranks):
        raise ValueError(
            f"wq has {wq.shape[-1]} columns and wv {wv.shape[-1]}, but ranks sum to {sum(ranks)} "
            f"and vo_ranks to {sum(vo_ranks)}"
        )
    return vo_ranks


def twin_attention(
    x: Tensor,
    wq: Tensor,
    bq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    bo: Tensor,
    *,
    ranks: Sequence[int],
    vo_ranks: Sequence[int] | None = None,
    backend: str = "auto",
) -> Tensor:
    """Self-attention whose heads keep W_Q W_K^T and W_V W_O as low-rank factors; no mask.

    Weights are packed per head (head h's ranks[h] columns after those of heads
    0..h-1), oriented as y = x @ w; with equal ranks they are the `TwinAttention` op's
    inputs reshaped, otherwise `onnx.onnx_weights` pads them into that layout.

    Args:
        x: (batch, audio_ctx, d_model) float, the layer-normed input (audio_ctx positions
            of 20 ms in Whisper's encoder; any length works).
        wq: (d_model, sum(ranks)) query factors, 1/sqrt(head_dim) folded in.
        bq: (sum(ranks),) query bias, scaled likewise (keys have no bias: it cancels in softmax).
        wk: (d_model, sum(ranks)) key factors.
        wv: (d_model, sum(vo_ranks)) value factors (the value bias is folded into bo).
        wo: (sum(vo_ranks), d_model) output factors; bo: (d_model,) output bias.
        ranks: query/key rank per head; vo_ranks: value/output rank per head (default ranks).
        backend: "auto" or "reference" (both the plain PyTorch math today).
    Returns:
        (batch, audio_ctx, d_model): concat_h(softmax(Q_h K_h^T) V_h) @ wo + bo with
        Q_h = x wq_h + bq_h, K_h = x wk_h, V_h = x wv_h.
    Raises:
        ValueError: an unknown backend, or ranks that do not match the weights.
    Source: AdaPTwin (Biju, Sriram, Pilanci 2024), product twins.
    """
    resolve_backend(backend)
    vo_ranks = _check_ranks(wq, wv, ranks, vo_ranks)
    return reference.twin_attention(x, wq, bq, wk, wv, wo, bo, list(ranks), vo_ranks)


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
    *,
    ranks: Sequence[int],
    vo_ranks: Sequence[int] | None = None,
    backend: str = "auto",
) -> Tensor:
    """`twin_attention` with int8 weights, the projections as `int8_matmul`.

    Args:
        x, bq, bo, ranks, vo_ranks: as `twin_attention` (float32).
        wq, wk, wv, wo: int8 in `twin_attention`'s shapes, symmetric per output column.
        sq, sk: (sum(ranks),), sv: (sum(vo_ranks),), so: (d_model,) float32 scales.
        backend: "auto" or "reference".
    Returns:
        (batch, audio_ctx, d_model) float32; the attention itself runs in float.
    Raises:
        ValueError: an unknown backend, or ranks that do not match the weights.
    Source: as `twin_attention`; int8 as `asr_app.kernels.int8_matmul.int8_matmul`.
    """
    resolve_backend(backend)
    vo_ranks = _check_ranks(wq, wv, ranks, vo_ranks)
    return reference.twin_attention_int8(x, wq, sq, bq, wk, sk, wv, sv, wo, so, bo, list(ranks), vo_ranks)


__all__ = ["twin_attention", "twin_attention_int8", "twin_heads"]
