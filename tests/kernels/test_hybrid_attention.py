"""`hybrid_attention` and `hedgehog_feature_map` (CALD's own ops): each reference against
its formula written out query by query, and against its ONNX function in onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asr_app.kernels.hedgehog_feature_map import hedgehog_feature_map
from asr_app.kernels.hybrid_attention import hybrid_attention
from tests.kernels.onnx_run import run_own_op


def _inputs(b, h, t, d, f, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, t, d, generator=g, dtype=torch.float64) for _ in range(3))
    pq, pk = (torch.rand(b, h, t, f, generator=g, dtype=torch.float64) for _ in range(2))
    gamma = torch.rand(h, generator=g, dtype=torch.float64) + 0.5
    return q, k, v, pq, pk, gamma


def _by_query(q, k, v, pq, pk, gamma, chunk, window):
    """The op's definition, one query at a time."""
    b, h, t, _ = q.shape
    out = torch.zeros(b, h, t, v.shape[-1], dtype=q.dtype)
    size = t if chunk is None else chunk
    for i in range(t):
        s = (i // size) * size
        e, lo = min(s + size, t), s - window
        soft = list(range(max(0, lo), e))
        lin = list(range(0, max(0, lo)))
        scores = q[:, :, i : i + 1] @ k[:, :, soft].mT  # (b, h, 1, n)
        w_soft = torch.exp(scores - scores.amax(-1, keepdim=True))
        num = w_soft @ v[:, :, soft]
        den = w_soft.sum(-1, keepdim=True)
        if lin:
            w_lin = (pq[:, :, i : i + 1] @ pk[:, :, lin].mT) * gamma[:, None, None]
            num, den = num + w_lin @ v[:, :, lin], den + w_lin.sum(-1, keepdim=True)
        out[:, :, i : i + 1] = num / den
    return out


@pytest.mark.parametrize(("t", "chunk", "window"), [(1, 4, 2), (7, 3, 2), (7, None, 0), (23, 5, 0), (23, 4, 9)])
def test_reference_is_the_formula_query_by_query(t, chunk, window):
    x = _inputs(2, 3, t, 5, 6)
    got = hybrid_attention(*x, chunk_frames=chunk, window_frames=window)
    torch.testing.assert_close(got, _by_query(*x, chunk, window), rtol=1e-10, atol=1e-10)


def test_one_chunk_is_softmax_attention():
    q, k, v, pq, pk, gamma = _inputs(1, 2, 30, 8, 16)
    want = torch.softmax(q @ k.mT, dim=-1) @ v
    torch.testing.assert_close(hybrid_attention(q, k, v, pq, pk, gamma, chunk_frames=None, window_frames=5), want)


@pytest.mark.parametrize(("t", "chunk", "window"), [(1, 4, 2), (7, 3, 2), (50, 8, 4), (50, None, 0), (1500, 100, 50)])
def test_onnx_function_matches_the_reference(t, chunk, window):
    x = [a.float() for a in _inputs(1, 2, t, 8, 16, seed=1)]
    q, k, v, pq, pk, gamma = x
    got = run_own_op(
        "HybridAttention",
        {
            "Q": q.numpy(),
            "K": k.numpy(),
            "V": v.numpy(),
            "PhiQ": pq.numpy(),
            "PhiK": pk.numpy(),
            "Gamma": gamma.numpy().reshape(-1, 1, 1),
            "Chunk": np.array(chunk or 1 << 30, np.int64),
            "Window": np.array(window, np.int64),
        },
        out_rank=4,
    )
    want = hybrid_attention(*x, chunk_frames=chunk, window_frames=window)
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-5, atol=1e-5)


def test_hedgehog_feature_map_reference_and_onnx_function():
    g = torch.Generator().manual_seed(2)
    x, w, b = (
        torch.randn(2, 3, 11, 4, generator=g),
        torch.randn(3, 4, 4, generator=g),
        torch.randn(3, 1, 4, generator=g),
    )
    got = hedgehog_feature_map(x, w, b)
    z = torch.einsum("bhtd,hde->bhte", x, w) + b
    torch.testing.assert_close(got, torch.cat([z.softmax(-1), (-z).softmax(-1)], -1))
    onnx = run_own_op("HedgehogFeatureMap", {"X": x.numpy(), "W": w.numpy(), "B": b.numpy()}, out_rank=4)
    torch.testing.assert_close(torch.from_numpy(onnx), got, rtol=1e-5, atol=1e-6)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        hybrid_attention(*_inputs(1, 1, 2, 2, 2), chunk_frames=1, window_frames=0, backend="triton")
