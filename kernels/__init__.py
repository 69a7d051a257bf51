"""Kernels of the project's own ops: each op beside its plain PyTorch reference.

One folder per op, as `<op>/{__init__.py, reference.py, onnx.py}` (a `triton.py` joins
when a fused kernel lands):

    block_attention   softmax(Q K^T) V, no mask, no scale           BlockAttention
    int8_matmul       X @ dequant(W), X quantized per tensor         Int8MatMul
    low_rank_linear   (X @ Down) @ Up + Bias, and its int8 variant   LowRankLinear(Int8)
    twin_attention    per-head low-rank product-twin attention       TwinAttention(Int8)
    hybrid_attention  CALD's chunked softmax + linear mixer          HybridAttention
    hedgehog_feature_map  [softmax(XW+b), softmax(-(XW+b))]          HedgehogFeatureMap

The public op is the function in `<op>/__init__.py` (import it from there, e.g.
`from asr_app.kernels.twin_attention import twin_attention`), with `backend="auto"`; the
ONNX function of the same op (domain `ownvoice.asr`, version 1) is in `<op>/onnx.py`.
Inputs, outputs and semantics: kernels/README.md.

This file imports neither torch nor onnxscript (the ONNX runtime backend runs without
torch); `function_protos()` loads onnxscript when called. The package imports torch,
triton (inside each op's triton.py only) and onnx; never the app.
"""

from __future__ import annotations

from asr_app.kernels.domain import DOMAIN, OP_NAMES, VERSION

__all__ = ["DOMAIN", "VERSION", "OP_NAMES", "function_protos"]


def function_protos() -> list:
    """FunctionProtos of every own op, in OP_NAMES order, to add to a ModelProto's `functions`."""
    from asr_app.kernels.block_attention.onnx import BlockAttention
    from asr_app.kernels.hedgehog_feature_map.onnx import HedgehogFeatureMap
    from asr_app.kernels.hybrid_attention.onnx import HybridAttention
    from asr_app.kernels.int8_matmul.onnx import Int8MatMul
    from asr_app.kernels.low_rank_linear.onnx import LowRankLinear, LowRankLinearInt8
    from asr_app.kernels.twin_attention.onnx import TwinAttention, TwinAttentionInt8

    ops = (
        Int8MatMul,
        BlockAttention,
        LowRankLinear,
        LowRankLinearInt8,
        TwinAttention,
        TwinAttentionInt8,
        HybridAttention,
        HedgehogFeatureMap,
    )
    return [f.to_function_proto() for f in ops]
