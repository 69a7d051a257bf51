"""A CALD encoder on the frames actually heard: any length offline, chunk by chunk live.

Whisper's encoder takes exactly 3,000 log-mel frames (30 s, padded). With CALD's mixer the
cost of a frame no longer depends on the whole window, so here the encoder runs on the
input's own length (`encode_frames`), and `StreamingEncoder` encodes a growing input
incrementally: each full chunk is encoded once, its layer states carried (constant size),
and only the unfinished chunk is recomputed at each update. At every update the streaming
output equals `encode_frames` on the input heard so far (tested to float32 precision).

Front end. Whisper's two convolutions (kernel 3; the second with stride 2) make encoder
frame j depend on log-mel frames 2j-2 .. 2j+2, so a chunk ending at encoder frame e is
final once mel frame 2e (the first after its own) has arrived; until then it is the unfinished chunk, computed as if the input ended
there (zero padding, as `encode_frames` pads the end of its input). Positions: Whisper's are
sinusoids (openai-whisper's `sinusoids`; the table of 1,500 rows is used where it reaches,
the same formula beyond), counted from the start of the input.

Shapes: mel (n_mels, frames) for one input (100 frames a second); encoder output (frames /
2, d_model) rounded up (50 frames a second).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from asr_app.compression.cald.layer import HybridSelfAttention
from asr_app.compression.cald.mixer import MixerState
from asr_app.compression.surgery import encoder_of


def positions(encoder: Any, start: int, stop: int) -> Tensor:
    """Encoder positions [start, stop) as (stop - start, d_model): rows of the model's table
    where it has them, Whisper's sinusoids (max timescale 10,000) beyond.

    Source: openai-whisper `sinusoids` (the encoder's fixed positional embedding).
    """
    table = encoder.embed_positions.weight
    rows = table.shape[0]
    parts = []
    if start < rows:
        parts.append(table[start : min(stop, rows)])
    if stop > rows:
        d = table.shape[1]
        increment = math.log(10000) / (d // 2 - 1)
        inv = torch.exp(-increment * torch.arange(d // 2, dtype=torch.float64))
        t = torch.arange(max(start, rows), stop, dtype=torch.float64)[:, None] * inv[None]
        parts.append(torch.cat([t.sin(), t.cos()], dim=1).to(table.dtype).to(table.device))
    return torch.cat(parts, dim=0)


def encoded_frames(mel_frames: int) -> int:
    """Encoder frames for `mel_frames` log-mel frames (Whisper's stride-2 convolution)."""
    return (mel_frames + 1) // 2


def encode_frames(model: nn.Module, mel: Tensor) -> Tensor:
    """Encode a log-mel input of any length, without padding it to 30 s.

    Args:
        model: a Hugging Face Whisper model (or its encoder); any encoder runs (softmax
            attention at quadratic cost; CALD's hybrid layers at linear cost).
        mel: (n_mels, frames) or (batch, n_mels, frames), Whisper's normalised log-mel.
    Returns:
        (encoded_frames(frames), d_model), or with the batch dimension first.
    Raises:
        ValueError: an empty input.
    """
    encoder: Any = encoder_of(model)
    single = mel.dim() == 2
    x = mel[None] if single else mel
    if x.shape[-1] < 1:
        raise ValueError("encode_frames needs at least one log-mel frame")
    x = x.to(dtype=encoder.conv1.weight.dtype, device=encoder.conv1.weight.device)
    h = F.gelu(encoder.conv2(F.gelu(encoder.conv1(x)))).transpose(1, 2)
    h = h + positions(encoder, 0, h.shape[1])
    for layer in encoder.layers:
        h = layer(h, None)
    h = encoder.layer_norm(h)
    return h[0] if single else h


def _front(encoder: Any, mel: Tensor, offset: int, total: int, start: int, stop: int) -> Tensor:
    """Conv front end and positions for encoder frames [start, stop) of an input of `total`
    mel frames, of which `mel` (n_mels, .) holds frames [offset, total); zero beyond the
    input's edges as the convolutions' padding. Returns (stop - start, d_model)."""
    lo, hi = 2 * start - 1, 2 * stop  # first-conv outputs needed: [lo, hi)
    a, b = max(lo, 0), min(hi, total)
    first, last = a - 1, b + 1  # mel frames they read: [first, last)
    m = mel[:, max(first, 0) - offset : min(last, total) - offset]
    m = F.pad(m, (max(0, -first), max(0, last - total)))
    c1, c2 = encoder.conv1, encoder.conv2
    h1 = F.gelu(F.conv1d(m[None].to(c1.weight.dtype), c1.weight, c1.bias))
    h1 = F.pad(h1, (a - lo, hi - b))
    h2 = F.gelu(F.conv1d(h1, c2.weight, c2.bias, stride=2))[0].T
    return h2 + positions(encoder, start, stop)


def _layer_step(layer: Any, h: Tensor, state: MixerState) -> tuple[Tensor, MixerState]:
    """A Whisper encoder layer (pre-norm, eval mode) on one chunk with its mixer's state."""
    attn: HybridSelfAttention = layer.self_attn
    y, state = attn.step(layer.self_attn_layer_norm(h), state)
    h = h + y
    y = layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(h))))
    return h + y, state


class StreamingEncoder:
    """Encode a growing log-mel input, each full chunk once (CALD encoders only).

    Feed log-mel frames as they arrive (`feed`), read the encoding of everything heard so
    far (`output`). Full chunks are encoded once with each layer's carried `MixerState`;
    the unfinished chunk is recomputed per `output` call, so an update costs one chunk or
    less whatever was heard before. Memory: the carried states (constant), the mel frames
    of the unfinished chunk and the outputs of the finished chunks (the caller drops those
    it no longer needs with `drop`).

    Args:
        model: a Hugging Face Whisper model (or encoder) converted by `convert_encoder`,
            in eval mode; its layers' `chunk_frames` (not None) sets the chunk.
    Raises:
        ValueError: an encoder without hybrid layers or with chunk_frames None.
    Source: CALD (He and Garner, arXiv 2410.06846) for the conversion; the chunked
    streaming form is this project's (compression/cald/README.md).
    """

    def __init__(self, model: nn.Module):
        self.encoder: Any = encoder_of(model)
        attns = [layer.self_attn for layer in self.encoder.layers]
        if not all(isinstance(a, HybridSelfAttention) for a in attns):
            raise ValueError("StreamingEncoder needs a CALD encoder: convert it first (convert_encoder)")
        chunks = {a.chunk_frames for a in attns}
        if len(chunks) != 1 or None in chunks:
            raise ValueError(
                f"every hybrid layer needs the same chunk_frames (not None), got {sorted(map(str, chunks))}"
            )
        self.chunk_frames: int = chunks.pop()
        self.states = [a.empty_state() for a in attns]
        n_mels, w = self.encoder.conv1.in_channels, self.encoder.conv1.weight
        self._mel = torch.zeros(n_mels, 0, dtype=w.dtype, device=w.device)
        self._mel_offset = 0  # index of self._mel's first frame in the input
        self.mel_frames = 0  # log-mel frames fed so far
        self.done = 0  # encoder frames in finished chunks
        self._done_out: list[Tensor] = []  # their outputs (before the final layer norm)
        self.dropped = 0  # finished frames dropped from the output by `drop`

    def feed(self, mel: Tensor) -> None:
        """Append log-mel frames (n_mels, frames) and encode every chunk they finish."""
        self._mel = torch.cat([self._mel, mel.to(dtype=self._mel.dtype, device=self._mel.device)], dim=1)
        self.mel_frames += mel.shape[1]
        c = self.chunk_frames
        with torch.no_grad():
            # A chunk ending at encoder frame e reads mel frames up to 2e: final once 2e < total.
            while 2 * (self.done + c) < self.mel_frames:
                h = self._run(self.done, self.done + c, self.states, keep=True)
                self._done_out.append(h)
                self.done += c
                trim = 2 * self.done - 2 - self._mel_offset  # keep mel from frame 2*done - 2
                self._mel, self._mel_offset = self._mel[:, trim:], self._mel_offset + trim

    def _run(self, start: int, stop: int, states: list[MixerState], keep: bool, mel: Tensor | None = None) -> Tensor:
        mel = self._mel if mel is None else mel
        h = _front(self.encoder, mel, self._mel_offset, self._mel_offset + mel.shape[1], start, stop)[None]
        for i, layer in enumerate(self.encoder.layers):
            h, new = _layer_step(layer, h, states[i])
            if keep:
                states[i] = new
        return h[0]

    def output(self, pad_frames: int = 0) -> Tensor:
        """The encoding of the input so far, (encoded_frames(mel_frames + pad_frames) -
        dropped, d_model): equal to `encode_frames` of the whole input followed by
        `pad_frames` zero log-mel frames (Whisper's padding), less dropped frames. The
        padding is not kept: the next `feed` goes on from the input."""
        total = encoded_frames(self.mel_frames + pad_frames)
        parts = list(self._done_out)
        if total > self.done:
            mel = self._mel
            if pad_frames:
                mel = torch.cat([mel, mel.new_zeros(mel.shape[0], pad_frames)], dim=1)
            states = list(self.states)  # the unfinished chunks' states are not kept
            with torch.no_grad():
                for start in range(self.done, total, self.chunk_frames):
                    stop = min(start + self.chunk_frames, total)
                    parts.append(self._run(start, stop, states, keep=True, mel=mel))
        if not parts:
            return self._mel.new_zeros(0, self.encoder.layer_norm.normalized_shape[0])
        with torch.no_grad():
            return self.encoder.layer_norm(torch.cat(parts, dim=0))

    def drop(self, frames: int) -> None:
        """Forget the outputs of the first `frames` finished encoder frames still held
        (whole chunks only; the carried states keep what the encoder needs of them).

        Raises:
            ValueError: frames not a multiple of the chunk or beyond the finished chunks.
        """
        if frames % self.chunk_frames or frames > len(self._done_out) * self.chunk_frames:
            raise ValueError(f"drop takes whole finished chunks of {self.chunk_frames} frames, got {frames}")
        del self._done_out[: frames // self.chunk_frames]
        self.dropped += frames

    def state_numel(self) -> int:
        """Numbers in the carried layer states (bounded by the window; does not grow)."""
        return sum(s.numel() for s in self.states)


__all__ = ["StreamingEncoder", "encode_frames", "encoded_frames", "positions"]
