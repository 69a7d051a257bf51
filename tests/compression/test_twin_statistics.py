"""AdaPTwin's statistics-weighted twins: mean-centring with bias correction, the weighted
query-bias fit, and each head's own value/output statistics."""

import copy

import pytest
import torch

from asr_app.compression.adaptwin import factor_query_key, factor_value_output
from asr_app.compression.adaptwin.factorize import centred

D, HD = 67, 13


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _moments(x):
    """Second moment (d, d) and mean (d,) of rows of x."""
    return x.T @ x / x.shape[0], x.mean(0)


def _offset_data(n, seed):
    """Rows with a large mean and correlated channels, like LayerNorm outputs with outlier channels."""
    mix = _rand(D, D, seed=seed) / D**0.5
    return _rand(n, D, seed=seed + 1) @ mix + 3.0 * _rand(D, seed=seed + 2)


def _row_centred(logits):
    """Logits up to a constant per query: what the softmax sees."""
    return logits - logits.mean(-1, keepdim=True)


def _qk_error(x, y, w_q, b_q, w_k, scale, q, k, bq):
    ref = ((x @ w_q.T + b_q) @ (y @ w_k.T).T) * scale
    got = (x @ q.T + bq) @ (y @ k.T).T
    return (_row_centred(got) - _row_centred(ref)).pow(2).mean().item()


def test_centred_query_key_twins_are_exact_at_full_rank_and_better_at_low_rank():
    x, y = _offset_data(400, 10), _offset_data(500, 20)
    cov_x, mu_x = _moments(x)
    cov_y, mu_y = _moments(y)
    w_q, b_q, w_k = _rand(HD, D, seed=7), _rand(HD, seed=8), _rand(HD, D, seed=9)
    scale = HD**-0.5
    full = factor_query_key(w_q, b_q, w_k, HD, scale, cov_x, cov_k=cov_y, mean=mu_x, mean_k=mu_y)
    assert _qk_error(x, y, w_q, b_q, w_k, scale, *full) < 1e-8
    errors = {}
    for name, kw in {
        "plain": {},
        "centred": {"mean": mu_x, "mean_k": mu_y},
        "centred+weighted": {"mean": mu_x, "mean_k": mu_y, "weighted_bias": True},
    }.items():
        twins = factor_query_key(w_q, b_q, w_k, 4, scale, cov_x, cov_k=cov_y, **kw)
        errors[name] = _qk_error(x, y, w_q, b_q, w_k, scale, *twins)
    assert errors["centred"] < 0.95 * errors["plain"], errors
    assert errors["centred+weighted"] <= errors["centred"] * (1 + 1e-9), errors


def test_the_weighted_query_bias_fit_minimises_the_error_the_keys_see():
    y = _offset_data(800, 30)
    cov_y, mu_y = _moments(y)
    w_q, b_q, w_k = _rand(HD, D, seed=1), 5 * _rand(HD, seed=2), _rand(HD, D, seed=3)
    scale = HD**-0.5
    keys = y - mu_y  # constants over keys cancel in the softmax: the bias acts on y~
    target = scale * (b_q @ w_k)

    def bias_error(bq, k):
        return ((keys @ (target - bq @ k)) ** 2).mean().item()

    _, k_plain, bq_plain = factor_query_key(w_q, b_q, w_k, 3, scale, cov_y, mean_k=mu_y)
    _, k_w, bq_w = factor_query_key(w_q, b_q, w_k, 3, scale, cov_y, mean_k=mu_y, weighted_bias=True)
    torch.testing.assert_close(k_plain, k_w)  # the factors are the same; only the bias differs
    assert bias_error(bq_w, k_w) < bias_error(bq_plain, k_plain)
    # weighted least squares: no other bias on this key factor does better
    for seed in range(5):
        assert bias_error(bq_w, k_w) <= bias_error(bq_w + 0.05 * _rand(3, seed=seed), k_w)


def test_centred_value_output_twins_are_exact_on_the_mean_and_better_at_low_rank():
    z = _offset_data(600, 40)
    cov, mu = _moments(z)
    w_v, b_v, w_o = _rand(HD, D, seed=4), _rand(HD, seed=5), _rand(D, HD, seed=6)
    ref = (z @ w_v.T + b_v) @ w_o.T

    def output(v, o, delta, at=z):
        return at @ v.T @ o.T + delta

    v, o, delta = factor_value_output(w_v, b_v, w_o, 3, cov, mean=mu)
    torch.testing.assert_close(output(v, o, delta, mu[None]), ((mu @ w_v.T + b_v) @ w_o.T)[None])
    err_centred = (output(v, o, delta) - ref).pow(2).mean()
    err_plain = (output(*factor_value_output(w_v, b_v, w_o, 3, cov)) - ref).pow(2).mean()
    assert err_centred < 0.95 * err_plain  # centring is optimal here: the output bias is free
    v, o, delta = factor_value_output(w_v, b_v, w_o, HD, cov, mean=mu)
    torch.testing.assert_close(output(v, o, delta), ref)


def test_centring_needs_statistics():
    w = _rand(HD, D)
    with pytest.raises(ValueError, match="statistics"):
        factor_query_key(w, None, w, 2, 1.0, None, mean=torch.zeros(D, dtype=torch.float64))
    with pytest.raises(ValueError, match="statistics"):
        factor_value_output(w, None, w.T, 2, None, mean=torch.zeros(D, dtype=torch.float64))
    assert centred(None, torch.zeros(3)) is None


def _jfk_mel(tiny):
    from asr_app.audio import load_audio, log_mel_window
    from tests.conftest import JFK

    return torch.from_numpy(log_mel_window(tiny.feature_extractor, load_audio(JFK)[: 16000 * 30]))[None]


def test_per_head_statistics_are_what_the_value_projection_sees(tiny):
    """vo_in / vo_mean of head h, pushed through that head's value projection, equal the
    second moment and mean of the head's own attention output (the input of out_proj,
    captured from the model's attention, bias removed)."""
    from asr_app.compression.calibrate import ActivationStats, collect_activation_stats

    mel = _jfk_mel(tiny)
    stats = collect_activation_stats(tiny.model, [mel], heads=True)
    layer = 2
    attn = tiny.model.model.encoder.layers[layer].self_attn
    seen = {}
    handle = attn.out_proj.register_forward_pre_hook(lambda m, args: seen.update(o=args[0]))
    try:
        with torch.no_grad():
            tiny.model.model.encoder(mel)
    finally:
        handle.remove()
    o = seen["o"].reshape(-1, attn.embed_dim).double()  # (T, heads * head_dim)
    hd = attn.head_dim
    for h in (0, attn.num_heads - 1):
        rows = slice(h * hd, (h + 1) * hd)
        w_v, b_v = attn.v_proj.weight[rows].double(), attn.v_proj.bias[rows].double()
        oh = o[:, rows] - b_v  # = z_h W_v^T (softmax rows sum to one)
        torch.testing.assert_close(stats.vo_mean[layer][h] @ w_v.T, oh.mean(0), rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(w_v @ stats.vo_in[layer][h] @ w_v.T, oh.T @ oh / oh.shape[0], rtol=1e-3, atol=1e-3)
    assert stats.vo_in[layer].shape == (attn.num_heads, attn.embed_dim, attn.embed_dim)
    torch.testing.assert_close(stats.attn_mean[0].shape, torch.Size([attn.embed_dim]))
    again = ActivationStats.from_state_dict(stats.state_dict())
    torch.testing.assert_close(again.vo_in[1], stats.vo_in[1])
    old = {k: v for k, v in stats.state_dict().items() if not k.startswith(("vo_", "attn_mean"))}
    with pytest.raises(ValueError, match="per-head"):
        ActivationStats.from_state_dict(old).twin_statistics(0, False, True, attn.num_heads)
    with pytest.raises(ValueError, match="means"):
        ActivationStats.from_state_dict(old).twin_statistics(0, True, False, attn.num_heads)


def test_per_head_and_centred_value_output_twins_cut_the_attention_error(tiny):
    """At full query/key rank (the attention maps are exact) and value/output rank 8, the
    attention output on the calibration window is closer to the original's with each head's
    own statistics than with the layer input's, and closer again with centring."""
    from asr_app.compression.adaptwin.layer import TwinSelfAttention
    from asr_app.compression.calibrate import collect_activation_stats

    mel = _jfk_mel(tiny)
    stats = collect_activation_stats(tiny.model, [mel], heads=True)
    layer = 1
    attn = tiny.model.model.encoder.layers[layer].self_attn
    seen = {}
    handle = attn.register_forward_pre_hook(lambda m, a, kw: seen.update(x=kw["hidden_states"]), with_kwargs=True)
    try:
        with torch.no_grad():
            tiny.model.model.encoder(mel)
    finally:
        handle.remove()
    x = seen["x"]
    with torch.no_grad():
        ref = attn(hidden_states=x)[0]
    heads, hd = attn.num_heads, attn.head_dim
    errors = {}
    for name, (centre, per_head) in {
        "input": (False, False),
        "head": (False, True),
        "head+centre": (True, True),
    }.items():
        twin_stats = stats.twin_statistics(layer, centre, per_head, heads)
        twin = TwinSelfAttention.from_attention(copy.deepcopy(attn), [hd] * heads, [8] * heads, stats=twin_stats)
        with torch.no_grad():
            errors[name] = (twin(x)[0] - ref).pow(2).mean().item()
    assert errors["head"] < errors["input"], errors
    assert errors["head+centre"] < errors["head"], errors


def test_a_twin_cut_again_at_its_own_ranks_is_unchanged_and_lower_ranks_stay_under_the_caps(tiny):
    """Progressive compression's building blocks: a `TwinSelfAttention` (and a
    `LowRankLinear`) factored again at its present ranks computes the same function; its
    per-head softmax weights are the dense head's at full rank; a re-allocation on the
    compressed model never raises a rank and stays within the budget counted on the original."""
    from asr_app.compression.adaptwin.allocate import allocate_ranks, dense_params, plan_encoder_params
    from asr_app.compression.adaptwin.apply import compress_encoder
    from asr_app.compression.adaptwin.layer import LowRankLinear, TwinSelfAttention
    from asr_app.compression.calibrate import _head_probs, collect_activation_stats

    mel = _jfk_mel(tiny)
    dense = tiny.model.model.encoder.layers[0].self_attn
    x = torch.randn(1, 50, dense.embed_dim, generator=torch.Generator().manual_seed(0))
    full = TwinSelfAttention.from_attention(copy.deepcopy(dense), [64] * 6)
    torch.testing.assert_close(full.head_probs(x), _head_probs(dense, x), rtol=1e-4, atol=1e-5)
    twin = TwinSelfAttention.from_attention(copy.deepcopy(dense), [5, 64, 12, 1, 30, 8], [64, 3, 7, 20, 1, 33])
    again = TwinSelfAttention.from_attention(twin, twin.ranks, twin.vo_ranks)
    with torch.no_grad():
        torch.testing.assert_close(again(x)[0], twin(x)[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="at most"):
        TwinSelfAttention.from_attention(twin, [6, 64, 12, 1, 30, 8], twin.vo_ranks)
    fc = LowRankLinear.from_linear(tiny.model.model.encoder.layers[0].fc1, 40)
    with torch.no_grad():
        torch.testing.assert_close(LowRankLinear.from_linear(fc, 40)(x), fc(x), rtol=1e-4, atol=1e-4)

    stats = collect_activation_stats(tiny.model, [mel])
    gains = None  # every site weighs the same (measuring the gains takes ~20 encoder passes)
    model = copy.deepcopy(tiny.model)
    first = allocate_ranks(model, 0.85, stats, gains)
    compress_encoder(model, first, stats)
    recal = collect_activation_stats(model, [mel], heads=True)
    assert recal.vo_in[0].shape == (6, 384, 384)
    second = allocate_ranks(model, 0.7, recal, gains, centre=True, head_stats=True, dense=tiny.model)
    assert plan_encoder_params(tiny.model, second) <= 0.7 * dense_params(tiny.model)
    for i, lp in second.layers.items():
        before = first.layers[i]
        assert all(a <= b for a, b in zip(lp.qk, before.qk)) and all(a <= b for a, b in zip(lp.vo, before.vo))
        for name in ("fc1", "fc2"):
            was = getattr(before, name)
            assert getattr(lp, name) is not None if was is not None else True
            assert was is None or getattr(lp, name) <= was
    counts = compress_encoder(model, second, recal)
    assert counts["after"]["encoder"] <= 0.7 * dense_params(tiny.model) + 1
