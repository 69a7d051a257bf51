"""`low_rank_linear` (float and int8): the reference against the formula and the ONNX
functions; `LowRankLinear` runs the op and still equals up(down(x)) exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asr_app.kernels.int8_matmul import int8_matmul
from asr_app.kernels.low_rank_linear import low_rank_linear, low_rank_linear_int8
from tests.kernels.onnx_run import run_own_op


def _factors(k, n, m, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, n, generator=g), torch.randn(n, m, generator=g), torch.randn(m, generator=g)


@pytest.mark.parametrize("x_shape, n", [((67,), 1), ((2, 37, 67), 13), ((1, 1500, 67), 29)])
def test_reference_is_the_formula(x_shape, n):
    down, up, bias = _factors(67, n, 19)
    x = torch.randn(*x_shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(low_rank_linear(x, down, up, bias), (x @ down) @ up + bias, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(low_rank_linear(x, down, up), (x @ down) @ up, rtol=1e-5, atol=1e-5)


def test_onnx_function_matches_the_reference():
    down, up, bias = _factors(67, 13, 19)
    x = torch.randn(2, 37, 67)
    got = run_own_op(
        "LowRankLinear", {"X": x.numpy(), "Down": down.numpy(), "Up": up.numpy(), "Bias": bias.numpy()}, out_rank=3
    )
    torch.testing.assert_close(torch.from_numpy(got), low_rank_linear(x, down, up, bias), rtol=1e-5, atol=1e-5)


def test_int8_reference_is_two_int8_products_and_matches_the_onnx_function():
    g = torch.Generator().manual_seed(2)
    down, up = (torch.randint(-60, 61, shape, generator=g, dtype=torch.int8) for shape in ((67, 13), (13, 19)))
    ds, us, bias = torch.rand(13, generator=g) * 0.01, torch.rand(19, generator=g) * 0.01, torch.randn(19, generator=g)
    x = torch.randn(2, 37, 67, generator=g)
    ref = low_rank_linear_int8(x, down, ds, up, us, bias)
    assert torch.equal(ref, int8_matmul(int8_matmul(x, down, ds), up, us) + bias)
    got = run_own_op(
        "LowRankLinearInt8",
        {
            "X": x.numpy(),
            "Down": down.numpy(),
            "DownScale": ds.numpy(),
            "Up": up.numpy(),
            "UpScale": us.numpy(),
            "Bias": bias.numpy(),
        },
        out_rank=3,
    )
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_layer_runs_the_op_bit_for_bit_as_its_modules(bias):
    from asr_app.compression.adaptwin.layer import LowRankLinear

    torch.manual_seed(0)
    m = LowRankLinear(67, 19, 13, bias=bias)
    x = torch.randn(2, 37, 67)
    with torch.no_grad():
        assert torch.equal(m(x), m.up(m.down(x)))


def test_unknown_backend_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'auto', 'reference'"):
        low_rank_linear(torch.randn(1, 4), *_factors(4, 2, 3), backend="fast")
