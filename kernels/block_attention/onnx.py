"""`BlockAttention` as an ONNX function (domain `ownvoice.asr` v1, standard opset-20 body)."""

from __future__ import annotations

from onnxscript import opset20 as op
from onnxscript import script
from onnxscript.values import Opset

from asr_app.kernels.domain import DOMAIN, VERSION

ownvoice = Opset(DOMAIN, VERSION)


@script(ownvoice, default_opset=op)
def BlockAttention(Q, K, V):
    """softmax(Q K^T) V for Q (B, H, T, r), K (B, H, S, r), V (B, H, S, rv) -> (B, H, T, rv),
    computed in 3 blocks of queries so the (T, S) score matrix is never whole in memory
    (1500 x 1500 x heads floats in Whisper's encoder). No mask, no scale (folded into Q)."""
    kt = op.Transpose(K, perm=[0, 1, 3, 2])
    q1, q2, q3 = op.Split(Q, axis=2, num_outputs=3)
    a1 = op.MatMul(op.Softmax(op.MatMul(q1, kt), axis=-1), V)
    a2 = op.MatMul(op.Softmax(op.MatMul(q2, kt), axis=-1), V)
    a3 = op.MatMul(op.Softmax(op.MatMul(q3, kt), axis=-1), V)
    return op.Concat(a1, a2, a3, axis=2)
