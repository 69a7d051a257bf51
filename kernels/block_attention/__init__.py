"""`block_attention`: softmax(Q K^T) V without mask or scale (own op `BlockAttention`)."""

from __future__ import annotations

from torch import Tensor

from asr_app.kernels.backend import resolve_backend
from asr_app.kernels.block_attention import reference


def block_attention(q: Tensor, k: Tensor, v: Tensor, *, backend: str = "auto") -> Tensor:
    """Softmax attention with no mask and no scale (fold 1/sqrt(head_dim) into q).

    Args:
        q: (batch, heads, queries, r) float (float32, or float16 / bfloat16).
        k: (batch, heads, keys, r), same dtype.
        v: (batch, heads, keys, rv), same dtype; rv may differ from r.
        backend: "auto" or "reference" (both the plain PyTorch math today).
    Returns:
        (batch, heads, queries, rv): softmax(q k^T, over keys) v. In Whisper's encoder
        queries = keys = audio_ctx (1500 positions of 20 ms).
    Raises:
        ValueError: an unknown backend.
    Source: scaled dot-product attention (Vaswani et al. 2017) with the scale folded in.
        The ONNX function (`onnx.py`) computes it in 3 blocks of queries so the
        (queries, keys) scores are never whole in memory; the math is the same.
    """
    resolve_backend(backend)
    return reference.block_attention(q, k, v)
