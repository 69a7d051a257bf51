"""The chunked hybrid token mixer of CALD's linear-time encoder, as pure functions.

Each query attends with exact softmax to the keys of its own chunk and of a short left
window before the chunk, and through a feature map (linear attention) to every older key,
whose sum is a constant-size state. Derivation and sources: README.md beside this file.

Shapes: `batch`, `heads`, `frames` (encoder positions, 20 ms each), `head_dim`, `features`
(the feature map's output width). The whole-window math is the own op `HybridAttention`
(`asr_app.kernels.hybrid_attention`, its PyTorch reference and ONNX function); this module
checks the arguments, folds the scale into q and adds the streaming step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from asr_app.compression.cald.config import check_chunking
from asr_app.kernels.hybrid_attention import hybrid_attention as kernel_hybrid_attention
from asr_app.kernels.hybrid_attention import reference


def chunk_masks(frames: int, chunk_frames: int | None, window_frames: int, device=None) -> tuple[Tensor, Tensor]:
    """Which keys each query reaches by softmax and which through the linear state.

    Query `i` lies in chunk `c = i // chunk_frames`, which starts at `s = c * chunk_frames`
    and ends at `e = min(s + chunk_frames, frames)`. Its softmax keys are `[max(0, s -
    window_frames), e)` (its chunk, bidirectional, and the left window); its linear keys are
    `[0, s - window_frames)`. `chunk_frames=None` is one chunk over everything: softmax over
    all keys, nothing linear (Whisper's own attention).

    Returns:
        (softmax_mask, linear_mask), each (frames, frames) bool, [query, key]; disjoint,
        and block-causal: no query reaches a key after its chunk.
    Raises:
        ValueError: bad chunk_frames or window_frames.
    """
    check_chunking(chunk_frames, window_frames)
    return reference.chunk_masks(frames, chunk_frames, window_frames, device)


def hybrid_attention_weights(
    q: Tensor,
    k: Tensor,
    phi_q: Tensor,
    phi_k: Tensor,
    gamma: Tensor,
    *,
    chunk_frames: int | None,
    window_frames: int,
) -> Tensor:
    """The mixer's attention weights over a whole window, by masks.

    w_ij = exp(s_ij - m_i) / den_i on the softmax keys, g (phi_q_i . phi_k_j) / den_i on the
    linear keys, 0 elsewhere, with s_ij = q_i . k_j / sqrt(head_dim), m_i the largest s_ij
    over the softmax keys, g the head's mixing gain and den_i making each row sum to 1; the
    key sets are `chunk_masks`'. With chunk_frames=None it is softmax attention. Memory is
    quadratic in frames (as the teacher's attention); `hybrid_attention_step` is the
    constant-state form.

    Args:
        q, k: (batch, heads, frames, head_dim) float.
        phi_q, phi_k: (batch, heads, frames, features) float, the feature map of q and k
            (non-negative).
        gamma: (heads,) float, the mixing gain of the linear part (> 0).
        chunk_frames, window_frames: as `chunk_masks`.
    Returns:
        (batch, heads, frames, frames), rows summing to 1 (attention transfer compares
        them with the teacher's softmax).
    Raises:
        ValueError: bad chunk_frames or window_frames.
    Source: CALD (He and Garner, arXiv 2410.06846) converts attention to a linear-time
    mixer; the sliding-window plus linear form follows LoLCATs (Zhang et al. 2024) and the
    learned feature map Hedgehog (Zhang et al., ICLR 2024); the chunking is ours.
    """
    check_chunking(chunk_frames, window_frames)
    return reference.hybrid_weights(q * q.shape[-1] ** -0.5, k, phi_q, phi_k, gamma, chunk_frames, window_frames)


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
) -> Tensor:
    """The hybrid mixer over a whole window at once (training, offline):
    `hybrid_attention_weights(...) @ v`.

    Args:
        v: (batch, heads, frames, head_dim); the rest as `hybrid_attention_weights`.
    Returns:
        (batch, heads, frames, head_dim).
    Raises:
        ValueError: bad chunk_frames or window_frames.
    """
    check_chunking(chunk_frames, window_frames)
    return kernel_hybrid_attention(
        q * q.shape[-1] ** -0.5, k, v, phi_q, phi_k, gamma, chunk_frames=chunk_frames, window_frames=window_frames
    )


@dataclass
class MixerState:
    """What streaming carries between chunks, constant in size.

    Attributes:
        keys, values: (batch, heads, <= window_frames, head_dim), the last window_frames
            keys and values (reached by softmax from the next chunk).
        phi_keys: (batch, heads, <= window_frames, features), their feature map (added to
            the linear state when they leave the window).
        kv_sum: (batch, heads, features, head_dim), sum of phi_k v^T over older frames.
        k_sum: (batch, heads, features), sum of phi_k over older frames.
        frames: frames seen so far.

    The sums grow with the frames seen (Hedgehog features add up to 2 per frame): keep the
    state in float32 for long streams (float16 loses precision after tens of seconds).
    """

    keys: Tensor
    values: Tensor
    phi_keys: Tensor
    kv_sum: Tensor
    k_sum: Tensor
    frames: int = 0

    @classmethod
    def empty(cls, batch: int, heads: int, head_dim: int, features: int, dtype=None, device=None) -> MixerState:
        """The state before any frame."""

        def z(*shape: int) -> Tensor:
            return torch.zeros(*shape, dtype=dtype, device=device)

        return cls(
            z(batch, heads, 0, head_dim),
            z(batch, heads, 0, head_dim),
            z(batch, heads, 0, features),
            z(batch, heads, features, head_dim),
            z(batch, heads, features),
        )

    def numel(self) -> int:
        """Numbers held (bounded by the window; does not grow with frames)."""
        return sum(t.numel() for t in (self.keys, self.values, self.phi_keys, self.kv_sum, self.k_sum))


def hybrid_attention_step(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    phi_q: Tensor,
    phi_k: Tensor,
    gamma: Tensor,
    state: MixerState,
    *,
    window_frames: int,
) -> tuple[Tensor, MixerState]:
    """One chunk of the hybrid mixer with a carried state (live mode).

    Feeding a window chunk by chunk with chunks of `chunk_frames` gives what
    `hybrid_attention(..., chunk_frames=chunk_frames)` gives for the whole window (tested
    to 1e-5 in float32); chunks may also differ in length. Cost per chunk depends on the
    chunk and the window, not on the frames before them.

    Args:
        q, k, v: (batch, heads, chunk, head_dim); phi_q, phi_k: (batch, heads, chunk,
            features); gamma: (heads,); state: from `MixerState.empty` or the previous step.
        window_frames: the left window reached by softmax (>= 0).
    Returns:
        (out, new_state): out (batch, heads, chunk, head_dim).
    Raises:
        ValueError: window_frames < 0 or an empty chunk.
    """
    check_chunking(None, window_frames)
    if q.shape[-2] < 1:
        raise ValueError("a step needs at least one frame")
    keys = torch.cat([state.keys, k], dim=-2)
    values = torch.cat([state.values, v], dim=-2)
    phi_keys = torch.cat([state.phi_keys, phi_k], dim=-2)
    g = gamma.to(q.dtype)[:, None]
    scores = (q @ keys.mT) * q.shape[-1] ** -0.5
    lin_num = (phi_q @ state.kv_sum) * g[..., None]
    lin_den = (phi_q @ state.k_sum[..., None]) * g[..., None]
    weights = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    out = (weights @ values + lin_num) / (weights.sum(dim=-1, keepdim=True) + lin_den)
    # Frames before the next chunk's window move into the linear sums.
    keep = min(window_frames, keys.shape[-2])
    old = keys.shape[-2] - keep
    kv_sum = state.kv_sum + phi_keys[..., :old, :].mT @ values[..., :old, :]
    k_sum = state.k_sum + phi_keys[..., :old, :].sum(dim=-2)
    cut = slice(old, None)
    new = MixerState(
        keys[..., cut, :], values[..., cut, :], phi_keys[..., cut, :], kv_sum, k_sum, state.frames + q.shape[-2]
    )
    return out, new


def hybrid_attention_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    phi_q: Tensor,
    phi_k: Tensor,
    gamma: Tensor,
    *,
    chunk_frames: int,
    window_frames: int,
) -> Tensor:
    """`hybrid_attention` computed chunk by chunk with the carried state: linear in frames,
    in time and in memory (each chunk holds its (chunk, window + chunk) weights), where the
    mask form holds (frames, frames). Autograd runs through it (training).

    Args:
        as `hybrid_attention`, with chunk_frames >= 1 (None, the whole window, has no
        chunks: use `hybrid_attention`).
    Returns:
        (batch, heads, frames, head_dim), equal to `hybrid_attention` (tested to 1e-5).
    Raises:
        ValueError: bad chunk_frames (None included) or window_frames.
    """
    if chunk_frames is None:
        raise ValueError("hybrid_attention_chunked needs chunk_frames >= 1; None is one chunk: use hybrid_attention")
    check_chunking(chunk_frames, window_frames)
    b, h, _, d = q.shape
    state = MixerState.empty(b, h, d, phi_k.shape[-1], q.dtype, q.device)
    outs = []
    for s in range(0, q.shape[-2], chunk_frames):
        c = slice(s, s + chunk_frames)
        y, state = hybrid_attention_step(
            q[..., c, :],
            k[..., c, :],
            v[..., c, :],
            phi_q[..., c, :],
            phi_k[..., c, :],
            gamma,
            state,
            window_frames=window_frames,
        )
        outs.append(y)
    return torch.cat(outs, dim=-2)


__all__ = [
    "MixerState",
    "check_chunking",
    "chunk_masks",
    "hybrid_attention",
    "hybrid_attention_chunked",
    "hybrid_attention_step",
    "hybrid_attention_weights",
]
