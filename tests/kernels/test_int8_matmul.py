"""`int8_matmul`: the reference against the quantization written out in numpy, against float
math and against the ONNX function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asr_app.kernels.int8_matmul import int8_matmul
from tests.kernels.onnx_run import run_own_op


def _inputs(x_shape, w_shape, seed=0, limit=60):
    """x float32, w int8 in [-limit, limit], scale (.., 1, M) or (M,). limit 60 keeps pairs of
    uint8 x int8 products inside int16, where some x86 u8s8 kernels without VNNI saturate."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*x_shape, generator=g) * 3 + 0.5
    w = torch.randint(-limit, limit + 1, w_shape, generator=g, dtype=torch.int8)
    scale_shape = (w_shape[-1],) if len(w_shape) == 2 else (*w_shape[:-2], 1, w_shape[-1])
    return x, w, torch.rand(*scale_shape, generator=g) * 0.01 + 1e-3


def _numpy_int8_matmul(x: np.ndarray, w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """ONNX DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul, step by step."""
    lo, hi = min(x.min(), 0.0), max(x.max(), 0.0)
    sx = np.float32((hi - lo) / np.float32(255))
    zx = np.clip(np.rint(-lo / sx), 0, 255)
    xq = np.clip(np.rint(x / sx) + zx, 0, 255).astype(np.int64)
    acc = np.matmul(xq - int(zx), w.astype(np.int64))
    return acc.astype(np.float32) * (sx * scale)


@pytest.mark.parametrize(
    "x_shape, w_shape", [((1, 67), (67, 29)), ((2, 1, 37, 67), (3, 67, 5)), ((1, 1500, 48), (48, 1))]
)
def test_reference_is_the_quantization_written_out(x_shape, w_shape):
    x, w, s = _inputs(x_shape, w_shape)
    want = _numpy_int8_matmul(x.numpy(), w.numpy(), s.numpy())
    np.testing.assert_allclose(int8_matmul(x, w, s).numpy(), want, rtol=1e-5, atol=1e-5)


def test_reference_is_close_to_the_float_product():
    x, w, s = _inputs((3, 5, 64), (64, 48), limit=127)
    want = x @ (w.float() * s)
    assert torch.linalg.norm(int8_matmul(x, w, s) - want) / torch.linalg.norm(want) < 0.02


def test_all_zero_input_gives_zero():
    _, w, s = _inputs((1, 8), (8, 3))
    assert torch.equal(int8_matmul(torch.zeros(2, 8), w, s), torch.zeros(2, 3))


@pytest.mark.parametrize("x_shape, w_shape", [((1, 67), (67, 29)), ((2, 1, 37, 67), (3, 67, 5))])
def test_onnx_function_matches_the_reference(x_shape, w_shape):
    x, w, s = _inputs(x_shape, w_shape, seed=1)
    got = run_own_op("Int8MatMul", {"X": x.numpy(), "W": w.numpy(), "Scale": s.numpy()}, out_rank=len(x_shape))
    np.testing.assert_allclose(got, int8_matmul(x, w, s).numpy(), rtol=1e-5, atol=1e-5)


def test_unknown_backend_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'auto', 'reference'"):
        int8_matmul(*_inputs((1, 4), (4, 2)), backend="triton")
