"""`hedgehog_feature_map`: the learned feature map of CALD's linear attention (own op
`HedgehogFeatureMap`)."""

from __future__ import annotations

from torch import Tensor

from asr_app.kernels.backend import resolve_backend
from asr_app.kernels.hedgehog_feature_map import reference


def hedgehog_feature_map(x: Tensor, weight: Tensor, bias: Tensor, *, backend: str = "auto") -> Tensor:
    """phi(x) = [softmax(x W_h + b_h), softmax(-(x W_h + b_h))] per head.

    Args:
        x: (batch, heads, frames, d) float, per-head queries or keys.
        weight: (heads, d, d); bias: (heads, 1, d).
        backend: "auto" or "reference" (both the plain PyTorch math today).
    Returns:
        (batch, heads, frames, 2 d), non-negative, each half summing to 1.
    Raises:
        ValueError: an unknown backend.
    Source: Zhang, Bhatia, Kumbong, Re, "The Hedgehog & the Porcupine: Expressive Linear
    Attentions with Softmax Mimicry", ICLR 2024.
    """
    resolve_backend(backend)
    return reference.hedgehog_feature_map(x, weight, bias)


__all__ = ["hedgehog_feature_map"]
