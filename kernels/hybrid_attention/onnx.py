"""`HybridAttention` as an ONNX function (domain `ownvoice.asr` v1, standard opset-20 body).

The masks are built in the graph from the number of frames and the `Chunk` / `Window`
inputs, so one graph serves any number of frames.
"""

from __future__ import annotations

from onnxscript import opset20 as op
from onnxscript import script
from onnxscript.values import Opset

from asr_app.kernels.domain import DOMAIN, VERSION

ownvoice = Opset(DOMAIN, VERSION)


@script(ownvoice, default_opset=op)
def HybridAttention(Q, K, V, PhiQ, PhiK, Gamma, Chunk, Window):
    """Q, K (B, H, T, d) with the scale folded into Q; V (B, H, T, dv); PhiQ, PhiK (B, H, T,
    F) >= 0; Gamma (H, 1, 1); Chunk, Window int64 scalars (a Chunk >= T is one chunk) ->
    (B, H, T, dv): softmax over each query's chunk and left window, gamma (PhiQ . PhiK)
    over older keys, normalised together."""
    t = op.Shape(Q, start=2, end=3)
    frames = op.Squeeze(t, [0])
    pos = op.Range(op.Constant(value_int=0), frames, op.Constant(value_int=1))
    start = op.Mul(op.Div(pos, Chunk), Chunk)
    end = op.Min(op.Add(start, Chunk), frames)
    lo = op.Unsqueeze(op.Sub(start, Window), [1])  # (T, 1)
    key = op.Unsqueeze(pos, [0])  # (1, T)
    soft = op.And(op.GreaterOrEqual(key, lo), op.Less(key, op.Unsqueeze(end, [1])))
    lin = op.Less(key, lo)
    scores = op.MatMul(Q, op.Transpose(K, perm=[0, 1, 3, 2]))
    neg = op.CastLike(op.Constant(value_float=-3.0e38), scores)
    masked = op.Where(soft, scores, neg)
    e = op.Exp(op.Sub(masked, op.ReduceMax(masked, [-1], keepdims=1)))
    zero = op.CastLike(op.Constant(value_float=0.0), scores)
    e = op.Where(soft, e, zero)
    linear = op.Mul(op.MatMul(PhiQ, op.Transpose(PhiK, perm=[0, 1, 3, 2])), Gamma)
    w = op.Add(e, op.Where(lin, linear, zero))
    return op.MatMul(op.Div(w, op.ReduceSum(w, [-1], keepdims=1)), V)
