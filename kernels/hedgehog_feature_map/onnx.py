"""`HedgehogFeatureMap` as an ONNX function (domain `ownvoice.asr` v1, standard opset-20 body)."""

from __future__ import annotations

from onnxscript import opset20 as op
from onnxscript import script
from onnxscript.values import Opset

from asr_app.kernels.domain import DOMAIN, VERSION

ownvoice = Opset(DOMAIN, VERSION)


@script(ownvoice, default_opset=op)
def HedgehogFeatureMap(X, W, B):
    """X (B, H, T, d), W (H, d, d), B (H, 1, d) -> (B, H, T, 2 d):
    [softmax(X W + B), softmax(-(X W + B))] over the last axis."""
    z = op.Add(op.MatMul(X, W), B)
    return op.Concat(op.Softmax(z, axis=-1), op.Softmax(op.Neg(z), axis=-1), axis=-1)
