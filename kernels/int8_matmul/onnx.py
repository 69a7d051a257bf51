"""`Int8MatMul` as an ONNX function (domain `ownvoice.asr` v1, standard opset-20 body)."""

from __future__ import annotations

from onnxscript import opset20 as op
from onnxscript import script
from onnxscript.values import Opset

from asr_app.kernels.domain import DOMAIN, VERSION

ownvoice = Opset(DOMAIN, VERSION)


@script(ownvoice, default_opset=op)
def Int8MatMul(X, W, Scale):
    """Y = X @ dequant(W): X (..., K) float32, W (K, M) int8, Scale (M,) float32 -> (..., M).

    X is quantized per tensor to uint8 at run time (DynamicQuantizeLinear), W is
    symmetric per output column (zero point 0): Y = (Xq - zx) @ W * (sx * Scale).
    """
    xq, xs, xz = op.DynamicQuantizeLinear(X)
    acc = op.MatMulInteger(xq, W, xz)
    return op.Cast(acc, to=1) * (xs * Scale)
