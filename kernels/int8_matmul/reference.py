"""Plain PyTorch math of `int8_matmul`: onnxruntime's dynamic int8 scheme, exactly.

Integer products are summed in float64, which is exact for these operands (|(xq - zx) w| <=
255 * 127, so any K below 2**53 / 32385 sums without rounding), and runs on any device.
"""

from __future__ import annotations

import torch
from torch import Tensor


def dynamic_quantize(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """ONNX `DynamicQuantizeLinear`: x float32 -> (xq uint8 as x, scale (), zero point ()).

    The range always includes 0: scale = (max(x, 0) - min(x, 0)) / 255,
    zero point = round(-min(x, 0) / scale), xq = clamp(round(x / scale) + zero point, 0, 255)
    (round half to even). An all-zero x gets scale 0 and xq = zero point = 0.
    """
    lo, hi = x.min().clamp(max=0), x.max().clamp(min=0)
    scale = (hi - lo) / 255
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero_point = torch.round(-lo / safe).clamp(0, 255)
    xq = (torch.round(x / safe) + zero_point).clamp(0, 255)
    return xq.to(torch.uint8), scale, zero_point.to(torch.uint8)


def int8_matmul(x: Tensor, w: Tensor, scale: Tensor) -> Tensor:
    """((xq - zx) @ w) * (sx * scale) in float32; shapes as `asr_app.kernels.int8_matmul.int8_matmul`."""
    xq, sx, zx = dynamic_quantize(x.float())
    acc = torch.matmul(xq.double() - zx.double(), w.double())
    return acc.float() * (sx * scale)
