"""`HybridSelfAttention`: Whisper's encoder self-attention with CALD's chunked hybrid mixer.

It keeps Whisper's `q_proj / k_proj / v_proj / out_proj` (names, shapes and weights), so
LoRA targets them as before, and adds per head a feature map for queries and for keys and a
mixing gain. `forward` takes a whole window (offline, training); `step` takes one chunk and
a carried `MixerState` (live mode) and gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from asr_app.compression.cald.feature_map import make_feature_map
from asr_app.compression.cald.mixer import (
    MixerState,
    check_chunking,
    chunk_masks,
    hybrid_attention,
    hybrid_attention_chunked,
    hybrid_attention_step,
    hybrid_attention_weights,
)


class HybridSelfAttention(nn.Module):
    """Encoder self-attention: softmax within the chunk and a left window, linear beyond.

    Args:
        embed_dim: d_model; heads: number of heads (embed_dim % heads == 0).
        feature_map: "hedgehog" (learned, starts at a fixed softmax kernel), "elu" or "relu".
        chunk_frames: frames (20 ms positions) per chunk in `forward`; None is one chunk over
            the whole input, which makes the layer Whisper's own attention. Training sets it
            per batch (dynamic chunks).
        window_frames: frames before a chunk still reached by softmax.
        train_chunks: dynamic chunking in training: while the module is in training mode,
            each `forward` draws its chunk size from these (None: the whole window); empty
            (the default) keeps `chunk_frames`. The draw is seeded by the layer's call
            count, so every layer of an encoder draws the same size for the same batch.
    Raises:
        ValueError: heads not dividing embed_dim, bad chunking, unknown feature map.
    Source: CALD (He and Garner, arXiv 2410.06846) for converting a pretrained
    transformer's attention; the mixer: compression/cald/README.md.
    """

    def __init__(
        self,
        embed_dim: int,
        heads: int,
        *,
        feature_map: str = "hedgehog",
        chunk_frames: int | None = None,
        window_frames: int = 50,
        train_chunks: tuple[int | None, ...] = (),
    ):
        super().__init__()
        if heads < 1 or embed_dim % heads:
            raise ValueError(f"heads must divide embed_dim, got {heads} and {embed_dim}")
        check_chunking(chunk_frames, window_frames)
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, heads, embed_dim // heads
        self.chunk_frames, self.window_frames = chunk_frames, window_frames
        for c in train_chunks:
            check_chunking(c, window_frames)
        self.train_chunks = tuple(train_chunks)
        self._calls = 0  # forward calls in training mode: the seed of the next chunk draw
        self._drawn: int | None = None  # the chunk size drawn by the last training forward
        self.feature_map_name = feature_map
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=True)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=True)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=True)
        self.feature_q = make_feature_map(feature_map, heads, self.head_dim)
        self.feature_k = make_feature_map(feature_map, heads, self.head_dim)
        self.log_gamma = nn.Parameter(torch.zeros(heads))

    @classmethod
    def from_attention(cls, attn: Any, **kwargs: Any) -> HybridSelfAttention:
        """A hybrid layer holding a Hugging Face `WhisperAttention`'s weights (copied).

        kwargs: the constructor's keyword arguments. With chunk_frames=None it computes what
        `attn` computes (tested to float32 precision). The new layer has `attn`'s device and
        dtype. Convert before adding LoRA (peft renames the projections' keys).

        Raises:
            ValueError: as the constructor.
        """
        new = cls(attn.embed_dim, attn.num_heads, **kwargs)
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            getattr(new, name).load_state_dict(getattr(attn, name).state_dict())
        weight = attn.q_proj.weight
        return new.to(device=weight.device, dtype=weight.dtype)

    def _heads(self, x: Tensor) -> tuple[Tensor, ...]:
        """(batch, frames, d_model) -> q, k, v, phi_q, phi_k, each (batch, heads, frames, .)."""
        b, t, _ = x.shape

        def split(y: Tensor) -> Tensor:
            return y.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        return q, k, v, self.feature_q(q), self.feature_k(k)

    def _out(self, y: Tensor) -> Tensor:
        b, _, t, _ = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(b, t, self.embed_dim))

    def forward(
        self, hidden_states: Tensor, attention_mask: Tensor | None = None, **kwargs: Any
    ) -> tuple[Tensor, None]:
        """hidden_states: (batch, frames, d_model) -> ((batch, frames, d_model), None), the
        whole input in chunks of `self.chunk_frames` (as Whisper's encoder layer calls it):
        where a chunk is shorter than the input, chunk by chunk with the carried state
        (`hybrid_attention_chunked`: time and memory linear in frames), else in one piece.

        Raises:
            ValueError: an attention_mask (Whisper's encoder passes none).
        """
        if attention_mask is not None:
            raise ValueError("HybridSelfAttention takes no attention_mask (Whisper's encoder passes none)")
        q, k, v, pq, pk = self._heads(hidden_states)
        if self.training and self.train_chunks:
            g = torch.Generator().manual_seed(self._calls)
            self._calls += 1
            self._drawn = self.train_chunks[int(torch.randint(len(self.train_chunks), (1,), generator=g))]
        chunk = self.current_chunk
        mix: Callable[..., Tensor] = hybrid_attention
        if chunk is not None and chunk < hidden_states.shape[1]:
            mix = hybrid_attention_chunked  # linear time and memory; the same numbers
        y = mix(q, k, v, pq, pk, self.log_gamma.exp(), chunk_frames=chunk, window_frames=self.window_frames)
        return self._out(y), None

    @property
    def current_chunk(self) -> int | None:
        """The chunk size in use: in training mode with `train_chunks`, the one drawn by the
        last `forward`; otherwise `chunk_frames`."""
        if self.training and self.train_chunks and self._calls:
            return self._drawn
        return self.chunk_frames

    def reach(self, frames: int, chunk_frames: int | None = None) -> Tensor:
        """(frames, frames) bool, [query, key]: the keys each query reaches (softmax or
        linear), i.e. every key up to the end of its chunk; `chunk_frames` defaults to the
        chunk size of the last `forward` (drawn in training)."""
        soft, lin = chunk_masks(
            frames,
            self.current_chunk if chunk_frames is None else chunk_frames,
            self.window_frames,
            self.q_proj.weight.device,
        )
        return soft | lin

    def attention_weights(self, hidden_states: Tensor, chunk_frames: int | None = None) -> Tensor:
        """The mixer's weights for a whole input, (batch, frames, d_model) -> (batch, heads,
        frames, frames), rows summing to 1, with `chunk_frames` (default: the chunk size of
        the last `forward`, drawn in training)."""
        q, k, _, pq, pk = self._heads(hidden_states)
        chunk = self.current_chunk if chunk_frames is None else chunk_frames
        return hybrid_attention_weights(
            q, k, pq, pk, self.log_gamma.exp(), chunk_frames=chunk, window_frames=self.window_frames
        )

    def empty_state(self, batch: int = 1) -> MixerState:
        """The carried state before the first chunk."""
        w = self.q_proj.weight
        features = int(self.feature_k.features)  # type: ignore[arg-type]  # an int attribute of every feature map
        return MixerState.empty(batch, self.num_heads, self.head_dim, features, w.dtype, w.device)

    def step(self, chunk: Tensor, state: MixerState | None = None) -> tuple[Tensor, MixerState]:
        """One chunk of a stream: (batch, chunk_frames, d_model) and the state -> the
        chunk's output (batch, chunk_frames, d_model) and the new state (constant size).

        Raises:
            ValueError: an empty chunk.
        """
        q, k, v, pq, pk = self._heads(chunk)
        state = self.empty_state(chunk.shape[0]) if state is None else state
        y, state = hybrid_attention_step(q, k, v, pq, pk, self.log_gamma.exp(), state, window_frames=self.window_frames)
        return self._out(y), state


__all__ = ["HybridSelfAttention"]
