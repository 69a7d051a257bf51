"""The project's own ONNX ops (domain `ownvoice.asr`, version 1), as ONNX functions.

Each op is an ONNX function whose body uses only standard operators (opset 20), written
with onnxscript: stock onnxruntime inlines the body and runs it anywhere; a runtime with
a fused kernel for the op can bind that kernel instead. Inputs, outputs and semantics of
each op are documented in kernels/README.md and in the docstrings below.

    from asr_app.kernels.ops import DOMAIN, function_protos
    model.functions.extend(function_protos())

Shapes: B batch, T positions, D d_model, H heads, r / rv per-head query-key / value-output
rank (heads with smaller ranks are zero-padded to r / rv), N inner rank of a low-rank linear.
Sources: AdaPTwin (Biju, Sriram, Pilanci 2024) for the twin attention and low-rank
layers; per-channel weight / per-tensor dynamic activation int8 follows onnxruntime's
dynamic quantization (`MatMulInteger` scheme).
"""

from __future__ import annotations

from onnxscript import opset20 as op
from onnxscript import script
from onnxscript.values import Opset

DOMAIN = "ownvoice.asr"
VERSION = 1
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


@script(ownvoice, default_opset=op)
def LowRankLinear(X, Down, Up, Bias):
    """Y = (X @ Down) @ Up + Bias: X (..., K), Down (K, N), Up (N, M), Bias (M,) -> (..., M)."""
    return op.MatMul(op.MatMul(X, Down), Up) + Bias


@script(ownvoice, default_opset=op)
def LowRankLinearInt8(X, Down, DownScale, Up, UpScale, Bias):
    """LowRankLinear with int8 factors: Down (K, N) int8, DownScale (N,), Up (N, M) int8,
    UpScale (M,), Bias (M,) float32; each product as in Int8MatMul."""
    return Int8MatMul(Int8MatMul(X, Down, DownScale), Up, UpScale) + Bias


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


@script(ownvoice, default_opset=op)
def TwinAttention(X, Wq, Bq, Wk, Wv, Wo, Bo):
    """Low-rank product-twin self-attention (no mask, scale folded into Wq and Bq).

    X (B, T, D); Wq, Wk (H, D, r); Bq (H, 1, r); Wv (H, D, rv); Wo (H*rv, D); Bo (D,).
    Q = X Wq + Bq, K = X Wk, V = X Wv per head (B, H, T, r|rv);
    Y = concat_h(softmax(Q K^T) V) Wo + Bo: (B, T, D).
    """
    x = op.Unsqueeze(X, [1])  # (B, 1, T, D): one product per head by broadcasting
    q = op.MatMul(x, Wq) + Bq
    k = op.MatMul(x, Wk)
    v = op.MatMul(x, Wv)
    heads = op.Transpose(BlockAttention(q, k, v), perm=[0, 2, 1, 3])  # (B, T, H, rv)
    return op.MatMul(op.Reshape(heads, [0, 0, -1]), Wo) + Bo


@script(ownvoice, default_opset=op)
def TwinAttentionInt8(X, Wq, Sq, Bq, Wk, Sk, Wv, Sv, Wo, So, Bo):
    """TwinAttention with int8 weights: Wq, Wk, Wv, Wo int8 in the shapes above, scales
    Sq, Sk (H, 1, r), Sv (H, 1, rv), So (D,) per output column; Bq, Bo float32."""
    x = op.Unsqueeze(X, [1])
    q = Int8MatMul(x, Wq, Sq) + Bq
    k = Int8MatMul(x, Wk, Sk)
    v = Int8MatMul(x, Wv, Sv)
    heads = op.Transpose(BlockAttention(q, k, v), perm=[0, 2, 1, 3])
    return Int8MatMul(op.Reshape(heads, [0, 0, -1]), Wo, So) + Bo


OPS = (Int8MatMul, BlockAttention, LowRankLinear, LowRankLinearInt8, TwinAttention, TwinAttentionInt8)


def function_protos() -> list:
    """FunctionProtos of every op, to add to a ModelProto's `functions`."""
    return [f.to_function_proto() for f in OPS]
