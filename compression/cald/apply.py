"""Put CALD's hybrid mixer into a Whisper encoder, and set its chunking."""

from __future__ import annotations

from torch import nn

from asr_app.compression.cald.layer import HybridSelfAttention
from asr_app.compression.cald.mixer import check_chunking
from asr_app.compression.surgery import encoder_of


def convert_encoder(
    model: nn.Module,
    *,
    feature_map: str = "hedgehog",
    chunk_frames: int | None = None,
    window_frames: int = 50,
    train_chunks: tuple[int | None, ...] = (),
) -> list[HybridSelfAttention]:
    """Replace every encoder self-attention of a Hugging Face Whisper model (in place) by a
    `HybridSelfAttention` holding the same projection weights; layers already converted are
    kept. With chunk_frames=None the model computes what it computed before.

    Returns:
        The encoder's hybrid attentions, layer by layer.
    Raises:
        ValueError: bad chunking or feature map (before anything is changed).
    """
    for c in (chunk_frames, *train_chunks):
        check_chunking(c, window_frames)
    layers = encoder_of(model).layers
    converted = []
    for layer in layers:
        attn = layer.self_attn
        if not isinstance(attn, HybridSelfAttention):
            attn = HybridSelfAttention.from_attention(
                attn,
                feature_map=feature_map,
                chunk_frames=chunk_frames,
                window_frames=window_frames,
                train_chunks=train_chunks,
            )
            layer.self_attn = attn
        converted.append(attn)
    return converted


def hybrid_attentions(model: nn.Module) -> list[HybridSelfAttention]:
    """The encoder's `HybridSelfAttention` layers (empty for an unconverted model)."""
    return [layer.self_attn for layer in encoder_of(model).layers if isinstance(layer.self_attn, HybridSelfAttention)]


def set_chunking(model: nn.Module, chunk_frames: int | None) -> None:
    """Set the chunk size of every hybrid encoder layer (None: one chunk over the window,
    Whisper's own attention).

    Raises:
        ValueError: chunk_frames < 1, or a model without hybrid layers.
    """
    check_chunking(chunk_frames, 0)
    attns = hybrid_attentions(model)
    if not attns:
        raise ValueError("the model has no CALD layers: convert it first (convert_encoder)")
    for attn in attns:
        attn.chunk_frames = chunk_frames


__all__ = ["convert_encoder", "hybrid_attentions", "set_chunking"]
