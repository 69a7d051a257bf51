"""Plain PyTorch math of `low_rank_linear` and its int8 variant.

Weights come in the ONNX op's orientation (y = x @ down); `F.linear` is given `down.mT`, so
a layer that passes `nn.Linear.weight.mT` runs the very call `nn.Linear` would (bit-for-bit
the same results as `up(down(x))`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from asr_app.kernels.int8_matmul.reference import int8_matmul


def low_rank_linear(x: Tensor, down: Tensor, up: Tensor, bias: Tensor | None = None) -> Tensor:
    """(x @ down) @ up + bias; shapes as `asr_app.kernels.low_rank_linear.low_rank_linear`."""
    return F.linear(F.linear(x, down.mT), up.mT, bias)


def low_rank_linear_int8(
    x: Tensor, down: Tensor, down_scale: Tensor, up: Tensor, up_scale: Tensor, bias: Tensor | None = None
) -> Tensor:
    """Both products as `int8_matmul`, then + bias."""
    y = int8_matmul(int8_matmul(x, down, down_scale), up, up_scale)
    return y if bias is None else y + bias
