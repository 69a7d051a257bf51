"""Layer-wise distillation's decoder-aware losses: position weights for padding, the compared
spaces (LayerNorm, cross-attention key/value), the per-head attention-map KL."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import JFK


def test_position_weights_mark_the_audio_and_down_weight_padding():
    from asr_app.compression.distill import position_weights

    w = position_weights(torch.tensor([0.05, 30.0, 0.0]), 1500, 0.1)
    assert w.shape == (3, 1500)
    # 0.05 s covers positions starting at 0, 0.02 and 0.04 s
    tenth = torch.full((1500,), 0.1)
    assert w[0, :3].tolist() == [1.0, 1.0, 1.0] and torch.allclose(w[0, 3:], tenth[3:])
    assert torch.equal(w[1], torch.ones(1500))
    assert torch.allclose(w[2], tenth)


def test_weighted_nmse_counts_only_weighted_positions():
    from asr_app.compression.distill import weighted_nmse

    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 10, 4, generator=g)
    out = y.clone()
    out[:, 5:] += 100.0  # a huge error, only on the "padding" half
    plain = weighted_nmse(out, y)
    assert plain == pytest.approx(float(torch.nn.functional.mse_loss(out, y) / y.pow(2).mean()), rel=1e-5)
    w = torch.ones(2, 10)
    w[:, 5:] = 0.0
    assert float(weighted_nmse(out, y, w)) == pytest.approx(0.0, abs=1e-7)
    w[:, 5:] = 0.01
    assert 0 < float(weighted_nmse(out, y, w)) < 0.05 * float(plain)


def _tiny_encoder_io(tiny):
    from asr_app.audio import load_audio, log_mel_window

    mel = torch.from_numpy(log_mel_window(tiny.feature_extractor, load_audio(JFK)))[None]
    enc = tiny.model.model.encoder
    with torch.no_grad():
        hidden = enc(mel, output_hidden_states=True).hidden_states
    return mel, hidden


def test_layer_targets_read_layers_as_the_next_layer_and_the_decoder_do(tiny):
    """ "decoder" mode: an inner layer's output through the next layer's LayerNorm (a channel
    scaled up by 100 in the raw stream barely moves it); the last layer's output in every
    decoder layer's cross-attention key and value space: exactly what the decoder's
    cross-attention computes from the encoder's final output."""
    from asr_app.compression.distill import LayerTargets

    mel, hidden = _tiny_encoder_io(tiny)
    enc, dec = tiny.model.model.encoder, tiny.model.model.decoder
    raw, normed = LayerTargets(tiny.model, "nmse"), LayerTargets(tiny.model, "decoder")
    h = hidden[1]  # the first layer's output
    assert raw(0, h) is h
    with torch.no_grad():
        torch.testing.assert_close(normed(0, h), enc.layers[1].self_attn_layer_norm(h))
        last = len(enc.layers) - 1
        out = enc.layers[last](hidden[-2], None)  # HF's last hidden state is after the final LayerNorm
        kv = normed(last, out[0] if isinstance(out, tuple) else out)
    assert kv.shape == (1, 1500, 2 * len(dec.layers) * 384)
    with torch.no_grad():
        encoder_out = enc(mel).last_hidden_state
        first = dec.layers[0].encoder_attn
        torch.testing.assert_close(kv[..., :384], first.k_proj(encoder_out), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(kv[..., 384:768], first.v_proj(encoder_out), rtol=1e-4, atol=1e-4)
    # nmse: the same as comparing the views, the last layer's without building them
    from asr_app.compression.distill import weighted_nmse

    g = torch.Generator().manual_seed(0)
    w = torch.rand(1, 1500, generator=g)
    for i in (0, last):
        target = hidden[i + 1] if i < last else enc.layers[last](hidden[-2], None)
        target = target[0] if isinstance(target, tuple) else target
        out = target + 0.05 * torch.randn(target.shape, generator=g)
        with torch.no_grad():
            want = weighted_nmse(normed(i, out), normed(i, target), w)
            got = normed.nmse(i, out, target, w)
        assert float(got) == pytest.approx(float(want), rel=1e-3), i
    with pytest.raises(ValueError, match="layer loss"):
        LayerTargets(tiny.model, "cosine")


def test_attention_map_kl_is_zero_for_the_same_map_and_grows_with_a_cut(tiny):
    """The twins at full rank compute the teacher's attention maps (KL ~ 0); at rank 4 of 64
    per head the maps differ, and the KL has a gradient into the query/key twins only."""
    from asr_app.compression.adaptwin.layer import TwinSelfAttention
    from asr_app.compression.distill import attention_map_kl

    _, hidden = _tiny_encoder_io(tiny)
    teacher_layer = tiny.model.model.encoder.layers[1]
    heads, hd = teacher_layer.self_attn.num_heads, teacher_layer.self_attn.head_dim
    student = copy.deepcopy(teacher_layer)
    student.self_attn = TwinSelfAttention.from_attention(teacher_layer.self_attn, [hd] * heads)
    x = hidden[1]
    assert float(attention_map_kl(teacher_layer, student, x)) == pytest.approx(0.0, abs=1e-4)
    cut = copy.deepcopy(teacher_layer)
    cut.self_attn = TwinSelfAttention.from_attention(teacher_layer.self_attn, [4] * heads)
    kl = attention_map_kl(teacher_layer, cut, x)
    assert float(kl) > 0.05
    kl.backward()
    assert cut.self_attn.q_proj.weight.grad is not None and cut.self_attn.k_proj.weight.grad is not None
    assert cut.self_attn.v_proj.weight.grad is None  # the value/output twin is not in the map
    # weights: positions with weight 0 drop out of the mean
    w = torch.zeros(1, 1500)
    w[:, :8] = 1.0
    with torch.no_grad():
        part = attention_map_kl(teacher_layer, cut, x, w, query_stride=1)
        assert float(attention_map_kl(teacher_layer, cut, x, 2 * w, query_stride=1)) == pytest.approx(float(part))
        w[:, 8:] = 1e-3  # the other queries, barely weighed, move it a little
        assert float(attention_map_kl(teacher_layer, cut, x, w, query_stride=1)) != pytest.approx(float(part))


def test_layerwise_distill_with_decoder_losses_learns_and_needs_lengths_for_padding(tiny):
    """With the decoder-aware loss, padding at 0.1 and the attention KL, the loss falls over
    a few steps on one window; padding_weight < 1 without audio lengths is refused."""
    from asr_app.compression.adaptwin.allocate import uniform_plan
    from asr_app.compression.adaptwin.apply import compress_encoder
    from asr_app.compression.distill import TrainConfig, layerwise_distill
    from asr_app.compression.lora import add_lora

    mel, _ = _tiny_encoder_io(tiny)
    student = copy.deepcopy(tiny.model)
    compress_encoder(student, uniform_plan(student, 0.5))
    cfg = TrainConfig(
        steps=8, lr=5e-3, checkpoint_every=100, layer_loss="decoder", padding_weight=0.1, attention_kl=0.5
    )
    losses: list[float] = []
    layerwise_distill(
        add_lora(copy.deepcopy(student), rank=4),
        tiny.model,
        [(mel, torch.tensor([11.0]))],
        cfg,
        on_step=lambda step, loss: losses.append(loss),
    )
    assert len(losses) == 8 and losses[-1] < 0.8 * losses[0], losses
    with pytest.raises(ValueError, match="audio seconds"):
        layerwise_distill(add_lora(copy.deepcopy(student), rank=4), tiny.model, [mel], cfg)
    with pytest.raises(ValueError, match="layer_loss"):
        TrainConfig(layer_loss="cosine")
    with pytest.raises(ValueError, match="padding_weight"):
        TrainConfig(padding_weight=1.5)


def _jfk_batch(tiny):
    from asr_app.audio import load_audio, log_mel_window

    mel = torch.from_numpy(log_mel_window(tiny.feature_extractor, load_audio(JFK)))[None]
    text = " And so my fellow Americans, ask not what your country can do for you."
    sp = tiny.special
    ids = tiny.tokenizer.encode(text, add_special_tokens=False)
    return mel, torch.tensor([[sp.timestamp_begin, *ids, sp.timestamp_begin + 200, sp.eot]])


def test_fisher_gains_are_the_decoder_loss_squared_gradients_per_head(tiny):
    """fisher_sensitivity's fc2 gain of the last layer equals the mean squared gradient of the
    loss at that output, computed here through a zero offset on it; it leaves the model as
    it was; a query/key head made to weigh far more gets more rank from the allocator."""
    from asr_app.compression.adaptwin.allocate import allocate_ranks
    from asr_app.compression.calibrate import collect_activation_stats
    from asr_app.compression.fisher import fisher_sensitivity

    model = tiny.model
    mel, labels = _jfk_batch(tiny)
    attn_before = [layer.self_attn for layer in model.model.encoder.layers]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    requires = [p.requires_grad for p in model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]  # other tests may leave some
    gains = fisher_sensitivity(model, [(mel, labels)])
    assert len(gains) == len(attn_before)
    assert all(len(g["qk"]) == 6 and min(g["qk"]) > 0 for g in gains)
    assert all(g[s] > 0 for g in gains for s in ("attn_out", "fc1_out", "fc2_out"))
    assert [layer.self_attn for layer in model.model.encoder.layers] == attn_before
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == requires
    assert all(
        (g is None and p.grad is None) or (g is not None and torch.equal(p.grad, g))
        for p, g in zip(model.parameters(), grads)
    )

    last = model.model.encoder.layers[-1].fc2
    offset = {}

    def add_zero(module, args, output):
        offset["z"] = torch.zeros_like(output, requires_grad=True)
        return output + offset["z"]

    handle = last.register_forward_hook(add_zero)
    try:
        loss = model(input_features=mel, labels=labels).loss
        (grad,) = torch.autograd.grad(loss, offset["z"])
    finally:
        handle.remove()
    assert gains[-1]["fc2_out"] == pytest.approx(float(grad.pow(2).mean()), rel=1e-3)

    stats = collect_activation_stats(model, [mel])
    plan = allocate_ranks(model, 0.55, stats, gains)
    heavy = [dict(g, qk=list(g["qk"])) for g in gains]
    heavy[0]["qk"][2] *= 1e6
    boosted = allocate_ranks(model, 0.55, stats, heavy)
    assert boosted.layers[0].qk[2] > plan.layers[0].qk[2]
