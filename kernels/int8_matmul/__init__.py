"""`int8_matmul`: float activations times int8 weights (own op `Int8MatMul`)."""

from __future__ import annotations

from torch import Tensor

from asr_app.kernels.backend import resolve_backend
from asr_app.kernels.int8_matmul import reference


def int8_matmul(x: Tensor, w: Tensor, scale: Tensor, *, backend: str = "auto") -> Tensor:
    """x @ dequant(w), with x quantized per tensor at run time.

    Args:
        x: (..., K) float32.
        w: (K, M) int8, symmetric per output column (zero point 0); a batched (..., K, M)
            weight broadcasts as in matmul.
        scale: (M,) float32 (or (..., 1, M) for a batched w), w_float ~= w * scale.
        backend: "auto" or "reference" (both the plain PyTorch math today).
    Returns:
        (..., M) float32: ((xq - zx) @ w) * (sx * scale), xq, sx, zx the uint8 values,
        scale and zero point of ONNX `DynamicQuantizeLinear(x)`, the products summed exactly.
    Raises:
        ValueError: an unknown backend.
    Source: onnxruntime's dynamic quantization (`MatMulInteger` scheme) with per-channel
        weights, as the ONNX function (`onnx.py`).
    """
    resolve_backend(backend)
    return reference.int8_matmul(x, w, scale)
