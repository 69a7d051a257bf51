"""`twin_attention` (float and int8): the reference against per-head softmax attention and
the ONNX functions (heads padded by `onnx_weights`); `TwinSelfAttention` runs the op."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asr_app.kernels.twin_attention import twin_attention, twin_attention_int8, twin_heads
from asr_app.kernels.twin_attention.onnx import onnx_weights, pad_heads
from tests.kernels.onnx_run import run_own_op

D = 67
RANKS, VO_RANKS = [7, 13, 1, 5], [2, 9, 9, 4]  # unequal, so heads are padded


def _weights(ranks, vo_ranks, seed=0):
    g = torch.Generator().manual_seed(seed)
    r, rv = sum(ranks), sum(vo_ranks)
    s = D**-0.5  # unit-variance queries and keys: logits of a few units, as in a trained layer
    return (
        torch.randn(D, r, generator=g) * s,
        torch.randn(r, generator=g),
        torch.randn(D, r, generator=g) * s,
        torch.randn(D, rv, generator=g) * s,
        torch.randn(rv, D, generator=g),
        torch.randn(D, generator=g),
    )


def _per_head(x, wq, bq, wk, wv, wo, bo, ranks, vo_ranks):
    """One head at a time, straight from the definition."""
    heads = []
    for cols, vo_cols in zip(torch.arange(sum(ranks)).split(ranks), torch.arange(sum(vo_ranks)).split(vo_ranks)):
        q, k, v = x @ wq[:, cols] + bq[cols], x @ wk[:, cols], x @ wv[:, vo_cols]
        heads.append(torch.softmax(q @ k.mT, dim=-1) @ v)
    return torch.cat(heads, dim=-1) @ wo + bo


@pytest.mark.parametrize(
    "x_shape, ranks, vo_ranks",
    [
        ((1, 1, D), RANKS, VO_RANKS),
        ((2, 37, D), RANKS, VO_RANKS),
        ((2, 37, D), [5, 5, 5], [5, 5, 5]),
        ((1, 37, D), [3], [11]),
        ((1, 1500, D), RANKS, VO_RANKS),
    ],
)
def test_reference_is_per_head_softmax_attention(x_shape, ranks, vo_ranks):
    w = _weights(ranks, vo_ranks)
    x = torch.randn(*x_shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        twin_attention(x, *w, ranks=ranks, vo_ranks=vo_ranks), _per_head(x, *w, ranks, vo_ranks), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("x_shape", [(1, 2, D), (2, 37, D)])
def test_onnx_function_matches_the_reference(x_shape):
    wq, bq, wk, wv, wo, bo = _weights(RANKS, VO_RANKS, seed=2)
    x = torch.randn(*x_shape)
    pq, pb, pk, pv, po = onnx_weights(wq, bq, wk, wv, wo, ranks=RANKS, vo_ranks=VO_RANKS)
    assert pq.shape == (4, D, 13) and pb.shape == (4, 1, 13) and pv.shape == (4, D, 9) and po.shape == (36, D)
    got = run_own_op(
        "TwinAttention",
        {n: t.numpy() for n, t in (("X", x), ("Wq", pq), ("Bq", pb), ("Wk", pk), ("Wv", pv), ("Wo", po), ("Bo", bo))},
        out_rank=3,
    )
    want = twin_attention(x, wq, bq, wk, wv, wo, bo, ranks=RANKS, vo_ranks=VO_RANKS)
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-5, atol=1e-5)


def test_equal_ranks_are_the_onnx_layout_reshaped():
    wq, bq, wk, wv, wo, bo = _weights([5] * 3, [4] * 3)
    pq, pb, _, pv, po = onnx_weights(wq, bq, wk, wv, wo, ranks=[5] * 3, vo_ranks=[4] * 3)
    assert torch.equal(pq, wq.reshape(D, 3, 5).permute(1, 0, 2)) and torch.equal(pb, bq.reshape(3, 1, 5))
    assert torch.equal(pv, wv.reshape(D, 3, 4).permute(1, 0, 2)) and torch.equal(po, wo)


def test_int8_reference_matches_the_onnx_function():
    g = torch.Generator().manual_seed(3)
    r, rv = sum(RANKS), sum(VO_RANKS)
    wq, wk, wv, wo = (
        torch.randint(-60, 61, s, generator=g, dtype=torch.int8) for s in ((D, r), (D, r), (D, rv), (rv, D))
    )
    sq, sk, sv, so = (torch.rand(n, generator=g) * 0.01 + 1e-3 for n in (r, r, rv, D))
    bq, bo, x = torch.randn(r, generator=g), torch.randn(D, generator=g), torch.randn(2, 37, D, generator=g)
    ref = twin_attention_int8(x, wq, sq, bq, wk, sk, wv, sv, wo, so, bo, ranks=RANKS, vo_ranks=VO_RANKS)
    pq, pb, pk, pv, po = onnx_weights(wq, bq, wk, wv, wo, ranks=RANKS, vo_ranks=VO_RANKS)  # int8 pads with 0 too
    scales = [pad_heads(s.unsqueeze(0), ranks, fill=1.0) for s, ranks in ((sq, RANKS), (sk, RANKS), (sv, VO_RANKS))]
    inputs = {
        "X": x,
        "Wq": pq,
        "Sq": scales[0],
        "Bq": pb,
        "Wk": pk,
        "Sk": scales[1],
        "Wv": pv,
        "Sv": scales[2],
        "Wo": po,
        "So": so,
        "Bo": bo,
    }
    got = run_own_op("TwinAttentionInt8", {n: t.numpy() for n, t in inputs.items()}, out_rank=3)
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5, atol=1e-5)


def test_layer_runs_the_op_bit_for_bit_as_its_modules():
    from asr_app.compression.adaptwin.layer import TwinSelfAttention

    torch.manual_seed(0)
    attn = TwinSelfAttention(D, RANKS, VO_RANKS)
    x = torch.randn(2, 37, D)
    with torch.no_grad():
        # the path taken while peft wraps the projections: modules, then the kernel's twin_heads
        modules = attn.out_proj(twin_heads(attn.q_proj(x), attn.k_proj(x), attn.v_proj(x), RANKS, VO_RANKS))
        assert torch.equal(attn(x)[0], modules)


def test_bad_backend_and_mismatched_ranks_are_refused():
    w, x = _weights(RANKS, VO_RANKS), torch.randn(1, 3, D)
    with pytest.raises(ValueError, match="'auto', 'reference'"):
        twin_attention(x, *w, ranks=RANKS, vo_ranks=VO_RANKS, backend="triton")
    with pytest.raises(ValueError, match="ranks sum to 25"):
        twin_attention(x, *w, ranks=[7, 13, 5], vo_ranks=[2, 9, 13])
