"""Feature maps of the linear part of CALD's mixer: Hedgehog (learned), ELU+1 and ReLU.

Each maps per-head queries or keys (batch, heads, frames, head_dim) to non-negative
features (batch, heads, frames, features), so that phi(q) . phi(k) stands in for
exp(q . k / sqrt(head_dim)) on keys older than the softmax window.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from asr_app.compression.cald.config import FEATURE_MAPS
from asr_app.kernels.hedgehog_feature_map import hedgehog_feature_map


class HedgehogFeatureMap(nn.Module):
    """phi(x) = [softmax(x W_h + b_h), softmax(-(x W_h + b_h))] per head, features =
    2 head_dim; W_h starts at the identity and b_h at zero, so the map starts as a fixed
    softmax kernel and is trained to mimic each head's attention (attention transfer).

    Source: Zhang, Bhatia, Kumbong, Re, "The Hedgehog & the Porcupine: Expressive Linear
    Attentions with Softmax Mimicry", ICLR 2024 (the softmax of +-x W map).
    """

    def __init__(self, heads: int, head_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(head_dim).repeat(heads, 1, 1))
        self.bias = nn.Parameter(torch.zeros(heads, 1, head_dim))
        self.features = 2 * head_dim

    def forward(self, x: Tensor) -> Tensor:
        """(batch, heads, frames, head_dim) -> (batch, heads, frames, 2 head_dim)."""
        return hedgehog_feature_map(x, self.weight, self.bias)


class EluFeatureMap(nn.Module):
    """phi(x) = elu(x / head_dim^(1/4)) + 1, features = head_dim (Katharopoulos et al.,
    "Transformers are RNNs", ICML 2020); no parameters."""

    def __init__(self, heads: int, head_dim: int):
        super().__init__()
        self.features = head_dim
        self.scale = head_dim**-0.25

    def forward(self, x: Tensor) -> Tensor:
        """(batch, heads, frames, head_dim) -> same shape, > 0."""
        return nn.functional.elu(x * self.scale) + 1


class ReluFeatureMap(nn.Module):
    """phi(x) = relu(x / head_dim^(1/4)), features = head_dim; no parameters. (A query
    whose features are all zero still has its softmax part, so the mixer's denominator
    stays >= 1.)"""

    def __init__(self, heads: int, head_dim: int):
        super().__init__()
        self.features = head_dim
        self.scale = head_dim**-0.25

    def forward(self, x: Tensor) -> Tensor:
        """(batch, heads, frames, head_dim) -> same shape, >= 0."""
        return torch.relu(x * self.scale)


def make_feature_map(name: str, heads: int, head_dim: int) -> nn.Module:
    """The feature map called `name` (one of FEATURE_MAPS).

    Raises:
        ValueError: an unknown name (lists the known ones).
    """
    maps = {"hedgehog": HedgehogFeatureMap, "elu": EluFeatureMap, "relu": ReluFeatureMap}
    if name not in maps:
        raise ValueError(f"unknown feature map {name!r}; choose one of {', '.join(FEATURE_MAPS)}")
    return maps[name](heads, head_dim)


__all__ = ["FEATURE_MAPS", "EluFeatureMap", "HedgehogFeatureMap", "ReluFeatureMap", "make_feature_map"]
