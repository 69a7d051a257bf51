"""Plain PyTorch math of `hedgehog_feature_map`."""

from __future__ import annotations

import torch
from torch import Tensor


def hedgehog_feature_map(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """[softmax(x W + b), softmax(-(x W + b))] over the last axis: x (batch, heads, frames,
    d), weight (heads, d, d), bias (heads, 1, d) -> (batch, heads, frames, 2 d)."""
    z = x @ weight.to(x.dtype) + bias.to(x.dtype)
    return torch.cat([torch.softmax(z, dim=-1), torch.softmax(-z, dim=-1)], dim=-1)
