"""`low_rank_linear`: a linear layer factored at rank N (own ops `LowRankLinear`, `LowRankLinearInt8`)."""

from __future__ import annotations

from torch import Tensor

from asr_app.kernels.backend import resolve_backend
from asr_app.kernels.low_rank_linear import reference


def low_rank_linear(
    x: Tensor, down: Tensor, up: Tensor, bias: Tensor | None = None, *, backend: str = "auto"
) -> Tensor:
    """(x @ down) @ up + bias: a dense (K, M) layer kept as rank-N factors.

    Args:
        x: (..., K) float, e.g. (batch, audio_ctx, d_model) into a feed-forward fc1.
        down: (K, N), up: (N, M), bias: (M,) or None; same dtype as x.
        backend: "auto" or "reference" (both the plain PyTorch math today).
    Returns:
        (..., M), costing N (K + M) multiply-adds per position instead of K M.
    Raises:
        ValueError: an unknown backend.
    Source: AdaPTwin (Biju, Sriram, Pilanci 2024), data-aware low-rank feed-forward layers.
    """
    resolve_backend(backend)
    return reference.low_rank_linear(x, down, up, bias)


def low_rank_linear_int8(
    x: Tensor,
    down: Tensor,
    down_scale: Tensor,
    up: Tensor,
    up_scale: Tensor,
    bias: Tensor | None = None,
    *,
    backend: str = "auto",
) -> Tensor:
    """`low_rank_linear` with int8 factors, each product as `int8_matmul`.

    Args:
        x: (..., K) float32.
        down: (K, N) int8, down_scale: (N,) float32; up: (N, M) int8, up_scale: (M,) float32
            (symmetric per output column); bias: (M,) float32 or None.
        backend: "auto" or "reference".
    Returns:
        (..., M) float32.
    Raises:
        ValueError: an unknown backend.
    Source: as `low_rank_linear`; int8 as `asr_app.kernels.int8_matmul.int8_matmul`.
    """
    resolve_backend(backend)
    return reference.low_rank_linear_int8(x, down, down_scale, up, up_scale, bias)
