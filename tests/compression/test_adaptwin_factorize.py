"""AdaPTwin product twins: full-rank equivalence, Eckart-Young optimality, bias and scale folding."""

import pytest
import torch

from asr_app.compression.adaptwin import (
    factor_query_key,
    factor_value_output,
    factorize_product,
    product_singular_values,
)

D, HD = 67, 13  # awkward sizes: d_model and head_dim not powers of two


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_full_rank_reproduces_the_product():
    a, b = _rand(D, HD, seed=1), _rand(D, HD, seed=2)
    a_r, b_r = factorize_product(a, b, HD)
    torch.testing.assert_close(a_r @ b_r.T, a @ b.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rank", [1, 5, 12])
def test_truncation_is_eckart_young_optimal(rank):
    a, b = _rand(D, HD, seed=3), _rand(D, HD, seed=4)
    full = (a @ b.T).double()
    s = torch.linalg.svdvals(full)
    a_r, b_r = factorize_product(a, b, rank)
    err = torch.linalg.norm(full - (a_r @ b_r.T).double())
    assert err.item() == pytest.approx(s[rank:].square().sum().sqrt().item(), rel=1e-4)
    torch.testing.assert_close(product_singular_values(a, b).double(), s[:HD], rtol=1e-4, atol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        factorize_product(_rand(D, HD), _rand(D, HD), HD + 1)
    with pytest.raises(ValueError, match="shape"):
        factorize_product(_rand(D, HD), _rand(D, HD + 1), 2)


def _head_logits(x, y, w_q, b_q, w_k, scale):
    return ((x @ w_q.T + b_q) @ (y @ w_k.T).T) * scale


def test_query_key_twins_keep_scale_and_query_bias_at_full_rank():
    x, y = _rand(7, D, seed=5), _rand(9, D, seed=6)
    w_q, b_q, w_k = _rand(HD, D, seed=7), _rand(HD, seed=8), _rand(HD, D, seed=9)
    scale = HD**-0.5
    q, k, bq = factor_query_key(w_q, b_q, w_k, HD, scale)
    ref = _head_logits(x, y, w_q, b_q, w_k, scale)
    got = (x @ q.T + bq) @ (y @ k.T).T  # scale folded: none applied here
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    q4, k4, bq4 = factor_query_key(w_q, b_q, w_k, 4, scale)
    assert q4.shape == (4, D) and k4.shape == (4, D) and bq4.shape == (4,)
    # the query bias term varies per key, so softmax does not cancel it: it must be kept
    assert ((b_q @ w_k) @ y.T).std() > 0


def test_value_output_twins_fold_value_bias_exactly():
    attn = torch.softmax(_rand(7, 9, seed=10), dim=-1)  # rows sum to one
    y = _rand(9, D, seed=11)
    w_v, b_v, w_o = _rand(HD, D, seed=12), _rand(HD, seed=13), _rand(D, HD, seed=14)
    ref = attn @ (y @ w_v.T + b_v) @ w_o.T
    v, o, delta = factor_value_output(w_v, b_v, w_o, HD)
    got = attn @ (y @ v.T) @ o.T + delta
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_whole_whisper_attention_at_full_rank_equals_the_original(tiny):
    """Every head of a real tiny.en encoder layer, factored at full rank, gives the same output."""
    attn = tiny.model.model.encoder.layers[2].self_attn
    h, hd = attn.num_heads, attn.head_dim
    x = _rand(1, 50, attn.embed_dim, seed=15)
    with torch.no_grad():
        ref = attn(x)[0][0]
        wq, bq, wk = attn.q_proj.weight, attn.q_proj.bias, attn.k_proj.weight
        wv, bv, wo, bo = attn.v_proj.weight, attn.v_proj.bias, attn.out_proj.weight, attn.out_proj.bias
        out = bo.clone().expand(50, -1).clone()
        for i in range(h):
            rows = slice(i * hd, (i + 1) * hd)
            q, k, qb = factor_query_key(wq[rows], bq[rows], wk[rows], hd, hd**-0.5)
            v, o, delta = factor_value_output(wv[rows], bv[rows], wo[:, rows], hd)
            p = torch.softmax((x[0] @ q.T + qb) @ (x[0] @ k.T).T, dim=-1)
            out = out + p @ (x[0] @ v.T) @ o.T + delta
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=2e-4)


def _copy_bundle(tiny):
    import copy
    import dataclasses

    return dataclasses.replace(tiny, model=copy.deepcopy(tiny.model))


def test_full_rank_surgery_decodes_the_same_tokens(tiny):
    from asr_app.audio import load_audio, log_mel_window
    from asr_app.compression.adaptwin import factor_encoder_attention
    from asr_app.decoding import DecodingOptions, WindowDecoder
    from tests.conftest import JFK, require_data

    require_data(JFK)
    factored = _copy_bundle(tiny)
    report = factor_encoder_attention(factored.model, 64)  # tiny.en: head_dim 64
    assert report["attention_params_after"] < report["attention_params_before"]  # v bias folded away
    mel = log_mel_window(tiny.feature_extractor, load_audio(JFK))
    x = torch.from_numpy(mel)[None]
    with torch.no_grad():
        a = tiny.model.model.encoder(x).last_hidden_state
        b = factored.model.model.encoder(x).last_hidden_state
    torch.testing.assert_close(b, a, rtol=1e-3, atol=2e-3)
    opts = DecodingOptions(temperatures=(0.0,))
    assert WindowDecoder(factored, opts).decode(mel).tokens == WindowDecoder(tiny, opts).decode(mel).tokens


def test_unequal_head_ranks_match_per_head_computation(tiny):
    from asr_app.compression.adaptwin import TwinSelfAttention

    attn = tiny.model.model.encoder.layers[1].self_attn
    ranks = [3, 17, 64, 1, 40, 9]
    twin = TwinSelfAttention.from_attention(attn, ranks)
    x = _rand(2, 30, attn.embed_dim, seed=16)
    hd = attn.head_dim
    with torch.no_grad():
        got = twin(x)[0]
        want = attn.out_proj.bias.expand(2, 30, -1).clone()
        for i, r in enumerate(ranks):
            rows = slice(i * hd, (i + 1) * hd)
            q, k, qb = factor_query_key(
                attn.q_proj.weight[rows], attn.q_proj.bias[rows], attn.k_proj.weight[rows], r, hd**-0.5
            )
            v, o, delta = factor_value_output(
                attn.v_proj.weight[rows], attn.v_proj.bias[rows], attn.out_proj.weight[:, rows], r
            )
            p = torch.softmax((x @ q.T + qb) @ (x @ k.T).transpose(1, 2), dim=-1)
            want = want + p @ (x @ v.T) @ o.T + delta
    torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-4)
    assert twin.q_proj.weight.shape == (sum(ranks), attn.embed_dim)


def test_half_rank_halves_attention_and_surgery_checks_keys(tiny):
    from asr_app.compression.adaptwin import TwinSelfAttention, factor_encoder_attention
    from asr_app.compression.adaptwin.apply import _check_attention

    factored = _copy_bundle(tiny)
    report = factor_encoder_attention(factored.model, {0: [32] * 6, 3: [16] * 6})
    d = 384
    dense = 4 * d * d + 3 * d
    twin = lambda r: 3 * 6 * r * d + 6 * r + d * 6 * r + d  # noqa: E731  q,k,v + q bias + out + out bias
    assert report["attention_params_before"] == 4 * dense
    assert report["attention_params_after"] == 2 * dense + twin(32) + twin(16)
    assert isinstance(factored.model.model.encoder.layers[0].self_attn, TwinSelfAttention)
    assert not isinstance(factored.model.model.encoder.layers[1].self_attn, TwinSelfAttention)
    bad = TwinSelfAttention(d, [8] * 6)
    bad.extra = torch.nn.Linear(2, 2)  # an unexpected key
    with pytest.raises(ValueError, match="extra.weight"):
        _check_attention(tiny.model.model.encoder.layers[2].self_attn.state_dict().keys(), bad, 48, 48, "layer 2")
    with pytest.raises(ValueError, match="ranks"):
        TwinSelfAttention.from_attention(tiny.model.model.encoder.layers[2].self_attn, [65] * 6)


def test_whitened_factorization_wins_on_the_data_it_was_fitted_to():
    from asr_app.compression.adaptwin import factorize_product_whitened

    a, b = _rand(D, HD, seed=20), _rand(D, HD, seed=21)
    # anisotropic inputs: a few directions carry most of the energy
    mix = _rand(D, D, seed=22) * torch.logspace(0, -3, D)[None, :]
    x = _rand(4000, D, seed=23) @ mix.T
    y = _rand(4000, D, seed=24) @ mix.T
    cov = (x.T @ x + y.T @ y) / 8000
    full = x @ (a @ b.T) @ y.T
    rank = 4
    ap, bp = factorize_product(a, b, rank)
    aw, bw = factorize_product_whitened(a, b, rank, cov)
    plain_err = torch.linalg.norm(full - x @ (ap @ bp.T) @ y.T)
    white_err = torch.linalg.norm(full - x @ (aw @ bw.T) @ y.T)
    assert white_err < 0.8 * plain_err
    # at full rank both reproduce the product; with identity covariance they coincide
    af, bf = factorize_product_whitened(a, b, HD, cov)
    torch.testing.assert_close(af @ bf.T, a @ b.T, rtol=1e-4, atol=1e-4)
    ai, bi = factorize_product_whitened(a, b, rank, torch.eye(D))
    torch.testing.assert_close(ai @ bi.T, ap @ bp.T, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="cov_a"):
        factorize_product_whitened(a, b, rank, torch.eye(D + 1))
