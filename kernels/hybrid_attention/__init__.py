"""`hybrid_attention`: CALD's chunked mixer over a whole window, softmax within a chunk and
a left window, linear attention through a feature map beyond (own op `HybridAttention`)."""

from __future__ import annotations

from torch import Tensor

from asr_app.kernels.backend import resolve_backend
from asr_app.kernels.hybrid_attention import reference


def hybrid_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    phi_q: Tensor,
    phi_k: Tensor,
    gamma: Tensor,
    *,
    chunk_frames: int | None,
    window_frames: int,
    backend: str = "auto",
) -> Tensor:
    """The hybrid mixer's output for a whole window.

    Query i lies in chunk c = i // chunk_frames, [s, e). Its weights: exp(q_i . k_j - m_i)
    on the softmax keys j in [max(0, s - window_frames), e) (m_i their largest score),
    gamma_h (phi_q_i . phi_k_j) on the linear keys j < s - window_frames, 0 after the chunk;
    normalised to sum 1, then applied to v.

    Args:
        q, k: (batch, heads, frames, head_dim) float, the 1/sqrt(head_dim) scale folded
            into q.
        v: (batch, heads, frames, head_dim_v).
        phi_q, phi_k: (batch, heads, frames, features) >= 0, the feature map of the
            unscaled q and of k.
        gamma: (heads,) > 0, each head's gain of the linear part.
        chunk_frames: frames per chunk (None: one chunk, plain softmax attention).
        window_frames: frames before a chunk reached by softmax (>= 0).
        backend: "auto" or "reference" (both the plain PyTorch math today).
    Returns:
        (batch, heads, frames, head_dim_v).
    Raises:
        ValueError: an unknown backend.
    Source: CALD (He and Garner, arXiv 2410.06846) converts attention to a linear-time
    mixer; the sliding-window plus linear form follows LoLCATs (Zhang et al. 2024); the
    chunking is ours (compression/cald/README.md).
    """
    resolve_backend(backend)
    return reference.hybrid_attention(q, k, v, phi_q, phi_k, gamma, chunk_frames, window_frames)


__all__ = ["hybrid_attention"]
