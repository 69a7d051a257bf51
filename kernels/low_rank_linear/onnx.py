"""`LowRankLinear` and `LowRankLinearInt8` as ONNX functions (domain `ownvoice.asr` v1,
standard opset-20 bodies; the int8 one calls `Int8MatMul`)."""

from __future__ import annotations

from onnxscript import opset20 as op
from onnxscript import script
from onnxscript.values import Opset

from asr_app.kernels.domain import DOMAIN, VERSION
from asr_app.kernels.int8_matmul.onnx import Int8MatMul

ownvoice = Opset(DOMAIN, VERSION)


@script(ownvoice, default_opset=op)
def LowRankLinear(X, Down, Up, Bias):
    """Y = (X @ Down) @ Up + Bias: X (..., K), Down (K, N), Up (N, M), Bias (M,) -> (..., M)."""
    return op.MatMul(op.MatMul(X, Down), Up) + Bias


@script(ownvoice, default_opset=op)
def LowRankLinearInt8(X, Down, DownScale, Up, UpScale, Bias):
    """LowRankLinear with int8 factors: Down (K, N) int8, DownScale (N,), Up (N, M) int8,
    UpScale (M,), Bias (M,) float32; each product as in Int8MatMul."""
    return Int8MatMul(Int8MatMul(X, Down, DownScale), Up, UpScale) + Bias
