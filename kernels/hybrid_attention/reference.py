"""Plain PyTorch math of `hybrid_attention`: the key masks of a chunked window and the
mixer's weights over a whole window (quadratic memory, as the teacher's softmax).

CALD's streaming form (a constant-size carried state) is `compression/cald/mixer.py`'s
`hybrid_attention_step`, tested equal to this one chunk by chunk.
"""

from __future__ import annotations

import torch
from torch import Tensor


def chunk_masks(frames: int, chunk_frames: int | None, window_frames: int, device=None) -> tuple[Tensor, Tensor]:
    """(softmax_mask, linear_mask), each (frames, frames) bool [query, key]: query i in chunk
    [s, e) reaches keys [max(0, s - window_frames), e) by softmax and [0, s - window_frames)
    linearly; chunk_frames=None is one chunk over everything."""
    size = frames if chunk_frames is None else chunk_frames
    pos = torch.arange(frames, device=device)
    start = (pos // size) * size
    end = torch.clamp(start + size, max=frames)
    key = pos[None, :]
    softmax_mask = (key >= (start - window_frames)[:, None]) & (key < end[:, None])
    linear_mask = key < (start - window_frames)[:, None]
    return softmax_mask, linear_mask


def hybrid_weights(
    q: Tensor, k: Tensor, phi_q: Tensor, phi_k: Tensor, gamma: Tensor, chunk_frames: int | None, window_frames: int
) -> Tensor:
    """(batch, heads, frames, frames) weights, rows summing to 1: exp(q.k - m) on the softmax
    keys (m: the row's largest score there) plus gamma (phi_q . phi_k) on the linear keys,
    normalised. No scale: it is folded into q."""
    soft, lin = chunk_masks(q.shape[-2], chunk_frames, window_frames, q.device)
    scores = (q @ k.mT).masked_fill(~soft, float("-inf"))
    weights = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    if lin.any():
        # masked_fill, not a product with the mask: an overflow off the linear keys stays out
        weights = weights + ((phi_q @ phi_k.mT) * gamma.to(q.dtype)[:, None, None]).masked_fill(~lin, 0)
    return weights / weights.sum(dim=-1, keepdim=True)


def hybrid_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    phi_q: Tensor,
    phi_k: Tensor,
    gamma: Tensor,
    chunk_frames: int | None,
    window_frames: int,
) -> Tensor:
    """`hybrid_weights(...) @ v`: (batch, heads, frames, head_dim)."""
    return hybrid_weights(q, k, phi_q, phi_k, gamma, chunk_frames, window_frames) @ v
