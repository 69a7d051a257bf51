"""CALD's hybrid mixer: the whole-window form equals the streaming form, and with one chunk
over everything it is Whisper's own attention."""

import pytest
import torch
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperAttention

from asr_app.compression.cald.feature_map import FEATURE_MAPS, make_feature_map
from asr_app.compression.cald.layer import HybridSelfAttention
from asr_app.compression.cald.mixer import (
    MixerState,
    chunk_masks,
    hybrid_attention,
    hybrid_attention_chunked,
    hybrid_attention_step,
)


def _qkv(frames, heads=3, head_dim=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, heads, frames, head_dim, generator=g, dtype=dtype) * 2 for _ in range(3)]


def _stream(q, k, v, pq, pk, gamma, bounds, window):
    state = MixerState.empty(q.shape[0], q.shape[1], q.shape[-1], pk.shape[-1], q.dtype)
    outs, sizes = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        y, state = hybrid_attention_step(
            q[..., a:b, :],
            k[..., a:b, :],
            v[..., a:b, :],
            pq[..., a:b, :],
            pk[..., a:b, :],
            gamma,
            state,
            window_frames=window,
        )
        outs.append(y)
        sizes.append(state.numel())
    return torch.cat(outs, dim=-2), state, sizes


def test_chunk_masks_by_hand():
    soft, lin = chunk_masks(7, 3, 2)
    # query 4 is in chunk [3, 6): softmax keys [1, 6), linear keys [0, 1)
    assert soft[4].tolist() == [False, True, True, True, True, True, False]
    assert lin[4].tolist() == [True, False, False, False, False, False, False]
    # query 6 is in the short last chunk [6, 7): softmax [4, 7), linear [0, 4)
    assert soft[6].nonzero().flatten().tolist() == [4, 5, 6]
    assert lin[6].nonzero().flatten().tolist() == [0, 1, 2, 3]
    assert not (soft & lin).any()
    soft, lin = chunk_masks(5, None, 0)
    assert soft.all() and not lin.any()
    with pytest.raises(ValueError, match="chunk_frames"):
        chunk_masks(5, 0, 1)
    with pytest.raises(ValueError, match="window_frames"):
        chunk_masks(5, 2, -1)


@pytest.mark.parametrize("name", FEATURE_MAPS)
@pytest.mark.parametrize(("frames", "chunk", "window"), [(1, 1, 0), (7, 3, 2), (7, 2, 0), (20, 4, 9), (13, 5, 40)])
def test_forward_equals_repeated_step(name, frames, chunk, window):
    q, k, v = _qkv(frames)
    fmap = make_feature_map(name, 3, 5).double()
    if name == "hedgehog":  # away from the identity start, so the learned map is exercised
        with torch.no_grad():
            fmap.weight.add_(0.3 * torch.randn(fmap.weight.shape, generator=torch.Generator().manual_seed(1)))
    pq, pk = fmap(q), fmap(k)
    gamma = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    whole = hybrid_attention(q, k, v, pq, pk, gamma, chunk_frames=chunk, window_frames=window)
    bounds = list(range(0, frames, chunk)) + [frames]
    streamed, state, sizes = _stream(q, k, v, pq, pk, gamma, bounds, window)
    torch.testing.assert_close(streamed, whole, rtol=1e-10, atol=1e-10)
    assert state.frames == frames
    assert state.keys.shape[-2] == min(window, frames)
    # once the window is full the state stops growing
    full = [n for n, end in zip(sizes, bounds[1:]) if end >= window]
    assert len(set(full)) <= 1


@pytest.mark.parametrize(("frames", "chunk", "window"), [(1, 1, 0), (7, 3, 2), (20, 4, 9), (23, 6, 40), (9, 20, 3)])
def test_chunked_form_equals_the_mask_form_forward_and_backward(frames, chunk, window):
    q, k, v = (t.requires_grad_() for t in _qkv(frames, seed=2))
    fmap = make_feature_map("hedgehog", 3, 5).double()
    gamma = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64, requires_grad=True)
    outs, grads = [], []
    for mix in (hybrid_attention, hybrid_attention_chunked):
        y = mix(q, k, v, fmap(q), fmap(k), gamma, chunk_frames=chunk, window_frames=window)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        outs.append(y.detach())
        grads.append([torch.zeros_like(t) if t.grad is None else t.grad.clone() for t in (q, k, v, gamma, fmap.weight)])
        for t in (q, k, v, gamma, fmap.weight):
            t.grad = None
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-10, atol=1e-10)
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="None is one chunk"):
        hybrid_attention_chunked(q, k, v, fmap(q), fmap(k), gamma, chunk_frames=None, window_frames=window)


def _naive(q, k, v, pq, pk, gamma, bounds, window):
    """The mixer query by query from its definition, for any chunk boundaries."""
    out = torch.zeros_like(q)
    for a, b in zip(bounds[:-1], bounds[1:]):
        lo = max(0, a - window)
        for i in range(a, b):
            s = (q[..., i, None, :] * k[..., lo:b, :]).sum(-1) / q.shape[-1] ** 0.5  # (batch, heads, keys)
            w = torch.exp(s - s.amax(-1, keepdim=True))
            lin = (pq[..., i, None, :] * pk[..., :lo, :]).sum(-1) * gamma[:, None]
            num = (w[..., None] * v[..., lo:b, :]).sum(-2) + (lin[..., None] * v[..., :lo, :]).sum(-2)
            out[..., i, :] = num / (w.sum(-1) + lin.sum(-1))[..., None]
    return out


@pytest.mark.parametrize(("bounds", "window"), [([0, 1, 8, 11, 20], 5), ([0, 6, 7, 20], 0), ([0, 3, 20], 30)])
def test_step_with_unequal_chunks_equals_the_definition(bounds, window):
    q, k, v = _qkv(20, seed=3)
    fmap = make_feature_map("relu", 3, 5).double()
    pq, pk = fmap(q), fmap(k)
    gamma = torch.tensor([0.2, 1.0, 2.0], dtype=torch.float64)
    streamed, state, _ = _stream(q, k, v, pq, pk, gamma, bounds, window)
    torch.testing.assert_close(streamed, _naive(q, k, v, pq, pk, gamma, bounds, window), rtol=1e-10, atol=1e-10)
    # and equal chunks through the masked form agree with the definition too
    torch.testing.assert_close(
        hybrid_attention(q, k, v, pq, pk, gamma, chunk_frames=4, window_frames=window),
        _naive(q, k, v, pq, pk, gamma, list(range(0, 20, 4)) + [20], window),
        rtol=1e-10,
        atol=1e-10,
    )


def test_linear_part_reaches_old_frames():
    """Past the window the output still changes with an old frame's value (through the
    linear part), and never with a frame after the query's chunk."""
    q, k, v = _qkv(12)
    fmap = make_feature_map("elu", 3, 5)
    gamma = torch.ones(3, dtype=torch.float64)
    base = hybrid_attention(q, k, v, fmap(q), fmap(k), gamma, chunk_frames=4, window_frames=2)
    v2 = v.clone()
    v2[..., 0, :] += 10
    moved = hybrid_attention(q, k, v2, fmap(q), fmap(k), gamma, chunk_frames=4, window_frames=2)
    # frame 0 is linear-only for the last chunk, softmax for the first: both see it
    assert (moved[..., 8:, :] - base[..., 8:, :]).abs().amax() > 1e-3
    # no query sees a later chunk (block-causal)
    v3 = v.clone()
    v3[..., 11, :] += 10
    late = hybrid_attention(q, k, v3, fmap(q), fmap(k), gamma, chunk_frames=4, window_frames=2)
    torch.testing.assert_close(late[..., :8, :], base[..., :8, :])


def _whisper_attention(seed=0):
    torch.manual_seed(seed)
    config = WhisperConfig(d_model=24, encoder_attention_heads=4)
    config._attn_implementation = "eager"
    attn = WhisperAttention(embed_dim=24, num_heads=4, config=config)
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return attn.eval()


@pytest.mark.parametrize("name", FEATURE_MAPS)
def test_one_chunk_is_whisper_attention(name):
    attn = _whisper_attention()
    hybrid = HybridSelfAttention.from_attention(attn, feature_map=name, chunk_frames=None).eval()
    x = torch.randn(2, 17, 24)
    with torch.no_grad():
        want = attn(x)[0]
        got = hybrid(x)[0]
        # a chunk at least as long as the input is the same as no chunking
        hybrid.chunk_frames = 17
        torch.testing.assert_close(hybrid(x)[0], got)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert set(n for n, _ in hybrid.named_children()) >= {"q_proj", "k_proj", "v_proj", "out_proj"}


@pytest.mark.parametrize(("chunks", "window"), [([4] * 5, 6), ([1, 7, 3, 9], 5)])
def test_layer_step_equals_forward_float32(chunks, window):
    """Streaming the layer chunk by chunk equals forward on the whole input with the same
    chunks (equal chunks through chunk_frames; unequal ones by comparing chunk prefixes)."""
    hybrid = HybridSelfAttention.from_attention(_whisper_attention(1), chunk_frames=chunks[0], window_frames=window)
    with torch.no_grad():
        hybrid.feature_q.weight.add_(0.2 * torch.randn_like(hybrid.feature_q.weight))
        hybrid.log_gamma.fill_(-1.0)
    x = torch.randn(1, sum(chunks), 24)
    state, outs, a = None, [], 0
    with torch.no_grad():
        for c in chunks:
            y, state = hybrid.step(x[:, a : a + c], state)
            outs.append(y)
            a += c
        streamed = torch.cat(outs, dim=1)
        if len(set(chunks)) == 1:
            torch.testing.assert_close(streamed, hybrid(x)[0], rtol=1e-5, atol=1e-5)
        else:  # the first chunk alone is the forward of its own frames with one chunk
            hybrid.chunk_frames = None
            torch.testing.assert_close(streamed[:, : chunks[0]], hybrid(x[:, : chunks[0]])[0], rtol=1e-5, atol=1e-5)
    assert state.frames == sum(chunks)
    assert state.keys.shape[-2] == window


def test_hedgehog_starts_at_a_fixed_softmax_kernel_and_bad_names_are_refused():
    fmap = make_feature_map("hedgehog", 2, 4)
    x = torch.randn(1, 2, 3, 4)
    torch.testing.assert_close(fmap(x), torch.cat([x.softmax(-1), (-x).softmax(-1)], dim=-1))
    with pytest.raises(ValueError, match="hedgehog"):
        make_feature_map("cosformer", 2, 4)
    with pytest.raises(ValueError, match="heads must divide"):
        HybridSelfAttention(24, 5)
    with pytest.raises(ValueError, match="attention_mask"):
        HybridSelfAttention(24, 4)(torch.randn(1, 3, 24), attention_mask=torch.zeros(1, 1, 3, 3))
