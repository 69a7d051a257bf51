"""CALD conversion of a whole (small, random) Whisper and its attention-transfer stage."""

import copy

import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from asr_app.compression.cald.apply import convert_encoder, hybrid_attentions, set_chunking
from asr_app.compression.cald.mixer import chunk_masks
from asr_app.compression.cald.train import attention_transfer, teacher_log_weights, transfer_kl
from asr_app.compression.distill import TrainConfig


def _whisper(seed=0):
    cfg = WhisperConfig(
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=48,
        vocab_size=100,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # sharper attention than the default init, so maps differ
        for layer in model.model.encoder.layers:
            layer.self_attn.q_proj.weight.mul_(8)
            layer.self_attn.k_proj.weight.mul_(8)
    return model


def _mels(n, seed):
    return [torch.randn(2, 80, 96, generator=torch.Generator().manual_seed(seed + i)) for i in range(n)]


def _mean_kl(student, teacher, mel, chunk):
    """The transfer loss of every layer on one batch, with the teacher's layer inputs."""
    inputs = []
    hooks = [
        layer.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for layer in teacher.model.encoder.layers
    ]
    with torch.no_grad():
        teacher.model.encoder(mel)
        soft, lin = chunk_masks(48, chunk, hybrid_attentions(student)[0].window_frames)
        total = 0.0
        for x, t_layer, s_layer in zip(inputs, teacher.model.encoder.layers, student.model.encoder.layers):
            h = t_layer.self_attn_layer_norm(x)
            target = teacher_log_weights(t_layer.self_attn, h, soft | lin)
            total += float(transfer_kl(target, s_layer.self_attn.attention_weights(h, chunk), soft | lin))
    for hook in hooks:
        hook.remove()
    return total / len(inputs)


def test_converted_encoder_with_one_chunk_is_the_original():
    teacher = _whisper()
    student = copy.deepcopy(teacher)
    attns = convert_encoder(student, chunk_frames=None, window_frames=4)
    assert len(attns) == 2 and hybrid_attentions(student) == attns
    mel = _mels(1, 0)[0]
    with torch.no_grad():
        want = teacher.model.encoder(mel).last_hidden_state
        torch.testing.assert_close(student.model.encoder(mel).last_hidden_state, want, rtol=1e-5, atol=1e-5)
        set_chunking(student, 8)
        assert (student.model.encoder(mel).last_hidden_state - want).abs().amax() > 1e-3
    assert convert_encoder(student) == attns  # converting again keeps the layers
    with pytest.raises(ValueError, match="convert it first"):
        set_chunking(_whisper(), 8)


def test_attention_transfer_lowers_the_kl_and_trains_only_the_maps():
    teacher = _whisper()
    student = copy.deepcopy(teacher)
    convert_encoder(student, feature_map="hedgehog", chunk_frames=None, window_frames=4)
    held_out = _mels(1, 100)[0]
    before = _mean_kl(student, teacher, held_out, 8)
    frozen = {k: v.clone() for k, v in student.state_dict().items() if "feature_" not in k and "log_gamma" not in k}
    result = attention_transfer(student, teacher, _mels(4, 0), TrainConfig(steps=40, lr=3e-2), chunk_choices=(8, 12))
    after = _mean_kl(student, teacher, held_out, 8)
    assert result["steps"] == 40
    assert after < 0.8 * before, (before, after)
    for key, value in student.state_dict().items():
        if key in frozen:
            torch.testing.assert_close(value, frozen[key], rtol=0, atol=0)
    assert hybrid_attentions(student)[0].chunk_frames is None  # the layers' own chunking is left as it was
    assert all(p.grad is None for p in teacher.parameters())  # nothing flows into the teacher
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert trainable and all("feature_" in n or "log_gamma" in n for n in trainable)


def test_transfer_kl_is_zero_for_the_teacher_itself():
    reach = torch.tril(torch.ones(5, 5, dtype=torch.bool))
    logits = torch.randn(1, 2, 5, 5).masked_fill(~reach, float("-inf"))
    target = torch.log_softmax(logits, -1)
    assert float(transfer_kl(target, target.exp(), reach)) == pytest.approx(0, abs=1e-6)
    assert float(transfer_kl(target, torch.full((1, 2, 5, 5), 0.2), reach)) > 0
