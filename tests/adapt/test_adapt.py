"""AdaPTwin end to end: FFN factors, allocation, LoRA merge, save/reload, adapt resume."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from conftest import JFK, LJSPEECH, TEST_THREADS, TRAIN_CLEAN_5, require_data


def _mel(bundle, path=JFK):
    from asr_app.audio import load_audio, log_mel_window

    return torch.from_numpy(log_mel_window(bundle.feature_extractor, load_audio(path)[: 16000 * 30]))[None]


def _copy_bundle(bundle, model=None):
    return dataclasses.replace(bundle, model=model if model is not None else copy.deepcopy(bundle.model))


def _greedy_tokens(bundle, mel):
    from asr_app.decoding import DecodingOptions, WindowDecoder

    dec = WindowDecoder(bundle, DecodingOptions(temperatures=(0.0,)))
    return dec.decode(mel[0].numpy()).tokens


def test_low_rank_linear_full_rank_equals_dense_and_whitening_wins():
    from asr_app.compression.adaptwin.layer import LowRankLinear

    torch.manual_seed(0)
    dense = torch.nn.Linear(24, 40)
    x = torch.randn(500, 24) * torch.linspace(0.05, 3, 24)  # anisotropic inputs
    cov = x.T @ x / len(x)
    with torch.no_grad():
        full = LowRankLinear.from_linear(dense, 24, cov)
        torch.testing.assert_close(full(x), dense(x), rtol=1e-4, atol=1e-4)
        plain, white = LowRankLinear.from_linear(dense, 6), LowRankLinear.from_linear(dense, 6, cov)
        err = lambda m: (m(x) - dense(x)).pow(2).sum(1).mean()  # noqa: E731
        assert err(white) < 0.8 * err(plain)


def test_joint_twins_never_worse_than_separate_truncation():
    from asr_app.compression.adaptwin.factorize import factorize_product, factorize_separately

    torch.manual_seed(1)
    a, b = torch.randn(48, 16), torch.randn(48, 16)
    m = a @ b.T
    for r in (2, 5, 9):
        ja, jb = factorize_product(a, b, r)
        sa, sb = factorize_separately(a, b, r)
        assert (m - ja @ jb.T).norm() < (m - sa @ sb.T).norm()
    sa, sb = factorize_separately(a, b, 16)
    torch.testing.assert_close(sa @ sb.T, m, rtol=1e-4, atol=1e-4)


def test_data_aware_full_rank_plan_reproduces_the_encoder(tiny):
    from asr_app.compression.adaptwin.apply import compress_encoder
    from asr_app.compression.adaptwin.config import CompressionPlan, LayerPlan
    from asr_app.compression.calibrate import collect_activation_stats

    mel = _mel(tiny)
    stats = collect_activation_stats(tiny.model, [mel])
    assert stats.positions == 1500 and stats.fc2_in[0].shape == (1536, 1536)
    model = copy.deepcopy(tiny.model)
    # unequal q/k and v/o ranks at full size in layer 0, FFN at full inner size (384) in layer 1
    plan = CompressionPlan({0: LayerPlan([64] * 6, [64] * 6), 1: LayerPlan(fc1=384, fc2=384)}, data_aware=True)
    compress_encoder(model, plan, stats)
    with torch.no_grad():
        want = tiny.model.model.encoder(mel).last_hidden_state
        got = model.model.encoder(mel).last_hidden_state
    torch.testing.assert_close(got, want, rtol=1e-3, atol=2e-3)


def test_decoder_feed_forward_factors_full_rank_exact_whitened_better_and_reload(tiny, tmp_path):
    """The decoder option: fc1/fc2 factored with the decoder's own token statistics."""
    from asr_app.compression.adaptwin.apply import compress_decoder_ffn, decoder_ffn_plan, param_counts
    from asr_app.compression.adaptwin.config import CompressionPlan, LayerPlan
    from asr_app.compression.adaptwin.method import ADAPTWIN
    from asr_app.compression.calibrate import collect_decoder_stats
    from asr_app.compression.checkpoint import load_compressed, save_compressed
    from asr_app.models import load_model

    mel = _mel(tiny)
    tokens = _greedy_tokens(tiny, mel)
    labels = torch.tensor([tokens + [-100] * 5])  # padding is not counted
    stats = collect_decoder_stats(tiny.model, [(mel, labels)])
    assert stats.positions == len(tokens) and stats.fc2_in[3].shape == (1536, 1536)

    def logits(model):
        with torch.no_grad():
            return model(input_features=mel, labels=labels).logits

    want = logits(tiny.model)
    full = copy.deepcopy(tiny.model)
    compress_decoder_ffn(full, CompressionPlan(decoder={i: LayerPlan(fc1=384, fc2=384) for i in range(4)}), stats)
    torch.testing.assert_close(logits(full), want, rtol=1e-3, atol=2e-3)

    errors = {}
    for data_aware in (True, False):
        model = copy.deepcopy(tiny.model)
        plan = CompressionPlan(data_aware=data_aware, decoder=decoder_ffn_plan(model, 0.5))
        assert plan.decoder[0].fc1 == 153  # 0.5 * 384 * 1536 / (384 + 1536)
        counts = compress_decoder_ffn(model, plan, stats if data_aware else None)
        errors[data_aware] = (logits(model) - want).pow(2).mean().item()
    assert counts["after"]["encoder"] == counts["before"]["encoder"]
    removed = counts["before"]["decoder"] - counts["after"]["decoder"]
    assert removed == 4 * 2 * (384 * 1536 - 153 * (384 + 1536))
    assert errors[True] < errors[False]  # whitening with the decoder's own inputs wins

    folder = save_compressed(model, tmp_path / "m", [ADAPTWIN.block(plan)], {"base_model": "tiny.en"})
    tiny.tokenizer.save_pretrained(str(folder))
    tiny.feature_extractor.save_pretrained(str(folder))
    reloaded, block = load_compressed(folder)
    assert CompressionPlan.from_dict(block["methods"][0]["plan"]).decoder == plan.decoder
    assert param_counts(reloaded) == param_counts(model)
    assert _greedy_tokens(load_model(str(folder)), mel) == _greedy_tokens(_copy_bundle(tiny, model), mel)
    with pytest.raises(ValueError, match="decoder attention"):
        CompressionPlan(decoder={0: LayerPlan([8] * 6, [8] * 6)})


def test_decoder_attention_twins_full_rank_exact_whitened_better_smaller_kv_cache_and_reload(tiny, tmp_path):
    """The decoder attention option: self- and cross-attention twins at one rank, whitened
    with the decoder's token statistics and the encoder output's; the KV cache narrows."""
    from asr_app.compression.adaptwin.apply import compress_decoder_attention, param_counts
    from asr_app.compression.adaptwin.config import CompressionPlan
    from asr_app.compression.adaptwin.method import ADAPTWIN
    from asr_app.compression.calibrate import DecoderStats, collect_decoder_stats
    from asr_app.compression.checkpoint import save_compressed
    from asr_app.models import load_model

    mel = _mel(tiny)
    tokens = _greedy_tokens(tiny, mel)
    labels = torch.tensor([tokens + [-100] * 5])
    stats = collect_decoder_stats(tiny.model, [(mel, labels)], attention=True)
    assert stats.self_in[3].shape == stats.cross_in[3].shape == stats.audio_in.shape == (384, 384)
    again = DecoderStats.from_state_dict(stats.state_dict())
    assert torch.equal(again.audio_in, stats.audio_in) and torch.equal(again.cross_in[2], stats.cross_in[2])
    assert collect_decoder_stats(tiny.model, [(mel, labels)]).self_in is None  # only when asked

    def logits(model):
        with torch.no_grad():
            return model(input_features=mel, labels=labels).logits

    want = logits(tiny.model)
    for data_aware in (True, False):
        full = copy.deepcopy(tiny.model)
        compress_decoder_attention(
            full, CompressionPlan(data_aware=data_aware, decoder_attention=64), stats if data_aware else None
        )
        torch.testing.assert_close(logits(full), want, rtol=1e-3, atol=2e-3)
    assert _greedy_tokens(_copy_bundle(tiny, full), mel) == tokens  # cached decoding, same tokens

    errors, models = {}, {}
    for data_aware in (True, False):
        model = copy.deepcopy(tiny.model)
        plan = CompressionPlan(data_aware=data_aware, decoder_attention=32)
        counts = compress_decoder_attention(model, plan, stats if data_aware else None)
        errors[data_aware], models[data_aware] = (logits(model) - want).pow(2).mean().item(), model
    assert errors[True] < errors[False]  # whitening with the inputs each side sees wins
    removed = counts["before"]["decoder"] - counts["after"]["decoder"]
    assert removed == 8 * ((4 * 384 * 384 + 3 * 384) - (4 * 384 * 192 + 192 + 384))  # 8 attentions, 6 heads x 32
    assert counts["after"]["encoder"] == counts["before"]["encoder"]
    model, plan = models[True], CompressionPlan(data_aware=True, decoder_attention=32)
    with torch.no_grad():
        out = model(input_features=mel, decoder_input_ids=torch.tensor([tokens[:4]]), use_cache=True)
    cache = out.past_key_values
    assert cache.self_attention_cache.layers[0].keys.shape == (1, 6, 4, 32)
    assert cache.cross_attention_cache.layers[0].values.shape == (1, 6, 1500, 32)

    folder = save_compressed(model, tmp_path / "m", [ADAPTWIN.block(plan)], {"base_model": "tiny.en"})
    tiny.tokenizer.save_pretrained(str(folder))
    tiny.feature_extractor.save_pretrained(str(folder))
    reloaded = load_model(str(folder))
    assert param_counts(reloaded.model) == param_counts(model)
    assert _greedy_tokens(reloaded, mel) == _greedy_tokens(_copy_bundle(tiny, model), mel)
    with pytest.raises(ValueError, match="statistics"):
        compress_decoder_attention(copy.deepcopy(tiny.model), plan, None)
    with pytest.raises(ValueError, match="already factored"):
        compress_decoder_attention(model, CompressionPlan(data_aware=False, decoder_attention=16))
    with pytest.raises(ValueError, match="1..64"):
        compress_decoder_attention(copy.deepcopy(tiny.model), CompressionPlan(data_aware=False, decoder_attention=65))
    with pytest.raises(ValueError, match=">= 1"):
        CompressionPlan(decoder_attention=0)
    from asr_app.adapt import AdaptOptions

    assert AdaptOptions.from_flat(decoder_attention_rank=32).run_name() == "tiny.en-keep0.85-decattn32"
    with pytest.raises(ValueError, match="decoder_attention_rank"):
        AdaptOptions.from_flat(decoder_attention_rank=0)


def test_surgery_checks_feed_forward_keys():
    from asr_app.compression.adaptwin.apply import _check_linear
    from asr_app.compression.adaptwin.layer import LowRankLinear

    dense = torch.nn.Linear(8, 12)
    good = LowRankLinear.from_linear(dense, 3)
    _check_linear(dense, good, "fc1")
    good.extra = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="extra.weight"):
        _check_linear(dense, good, "fc1")
    with pytest.raises(ValueError, match="up.bias"):
        _check_linear(dense, LowRankLinear(8, 12, 3, bias=False), "fc1")


def test_pruned_ffn_full_width_is_exact_and_refit_beats_keeping_columns():
    from asr_app.compression.adaptwin.prune import ffn_keep_for_budget, neuron_scores, prune_ffn

    torch.manual_seed(3)
    d, f = 16, 64
    fc1, fc2 = torch.nn.Linear(d, f), torch.nn.Linear(f, d)
    x = torch.randn(3000, d) * torch.linspace(0.1, 2, d)
    block = lambda a, b: b(torch.nn.functional.gelu(a(x)))  # noqa: E731
    with torch.no_grad():
        h = torch.nn.functional.gelu(fc1(x)).double()
        cov = h.T @ h / len(h)
        a, b, idx = prune_ffn(fc1, fc2, f, cov)
        assert idx.tolist() == list(range(f))
        torch.testing.assert_close(block(a, b), block(fc1, fc2), rtol=1e-4, atol=1e-4)
        a, b, idx = prune_ffn(fc1, fc2, 20, cov)
        assert a.weight.shape == (20, d) and b.weight.shape == (d, 20)
        torch.testing.assert_close(b.bias, fc2.bias)
        err = lambda y: float((y - block(fc1, fc2)).pow(2).sum())  # noqa: E731
        kept_columns = torch.nn.Linear(20, d)
        kept_columns.weight.copy_(fc2.weight[:, idx])
        kept_columns.bias.copy_(fc2.bias)
        assert err(block(a, b)) < err(block(a, kept_columns))  # least squares on the fitted audio
        # the chosen neurons are the top scores
        assert set(idx.tolist()) == set(torch.topk(neuron_scores(fc1.weight, fc2.weight, cov), 20).indices.tolist())
        plain_a, _, _ = prune_ffn(fc1, fc2, 20)  # no statistics: weight norms
        assert plain_a.weight.shape == (20, d)
    assert ffn_keep_for_budget(d, f, 10 * (d + f) * 2 + f) == (20 * (d + f) + f) // (2 * d + 1)
    with pytest.raises(ValueError, match="1..64"):
        prune_ffn(fc1, fc2, 0)
    with pytest.raises(ValueError, match="cov_h"):
        prune_ffn(fc1, fc2, 8, torch.eye(3))

    from asr_app.adapt import AdaptOptions
    from asr_app.cli import build_parser

    assert AdaptOptions.from_flat(ffn_method="prune").run_name() == "tiny.en-keep0.85-ffnprune"
    # another LoRA rank, batch or seed is another run, not "a run with other options"
    assert (
        AdaptOptions.from_flat(lora_rank=384, batch_size=4, seed=1).run_name() == "tiny.en-keep0.85-lora384-bs4-seed1"
    )
    assert build_parser().parse_args(["adapt", "--profile", "p", "--ffn-method", "prune"]).ffn_method == "prune"
    with pytest.raises(ValueError, match="ffn_method"):
        AdaptOptions.from_flat(ffn_method="svd")


def test_pruned_plan_spends_the_low_rank_budget_fits_other_voices_better_and_reloads(tiny, tmp_path):
    """Pruning each feed-forward block to the neurons its low-rank ranks pay for keeps the
    same budget and, on real speech from voices the statistics never saw, a smaller
    feed-forward error; the pruned model saves, reloads and decodes identically."""
    require_data(LJSPEECH, TRAIN_CLEAN_5)
    import json

    from asr_app.adapt import pack_windows
    from asr_app.compression.adaptwin.allocate import allocate_ranks, plan_encoder_params, pruned_plan
    from asr_app.compression.adaptwin.apply import compress_encoder
    from asr_app.compression.adaptwin.config import CompressionPlan
    from asr_app.compression.adaptwin.method import ADAPTWIN
    from asr_app.compression.calibrate import collect_activation_stats, measure_sensitivity
    from asr_app.compression.checkpoint import load_compressed, save_compressed
    from asr_app.datasets import load_dataset
    from asr_app.models import load_model

    # statistics on about 90 s of the speaker packed into full windows, as adapt gathers them
    # (pruning's least-squares refit needs more positions than a padded clip or two give)
    fit = [torch.from_numpy(w.mel[None]) for w in pack_windows(load_dataset(LJSPEECH, "LJ001-00*", 24), tiny)]
    other = torch.from_numpy(pack_windows(load_dataset(TRAIN_CLEAN_5, limit=3), tiny)[0].mel[None])
    stats = collect_activation_stats(tiny.model, fit)
    lowrank = allocate_ranks(tiny.model, 0.55, stats, measure_sensitivity(tiny.model, fit[0]))
    pruned = pruned_plan(tiny.model, lowrank)
    assert all(lp.fc1 is None and lp.fc2 is None and lp.ffn_keep for lp in pruned.layers.values())
    assert [lp.qk for lp in pruned.layers.values()] == [lp.qk for lp in lowrank.layers.values()]
    assert plan_encoder_params(tiny.model, lowrank) - 4 * 769 < plan_encoder_params(tiny.model, pruned)
    assert plan_encoder_params(tiny.model, pruned) <= plan_encoder_params(tiny.model, lowrank)
    assert CompressionPlan.from_dict(json.loads(json.dumps(pruned.to_dict()))) == pruned
    assert "ffn_keep" not in lowrank.to_dict()["layers"]["0"]  # plans saved before it read the same

    inputs = {}
    hooks = [
        layer.fc1.register_forward_pre_hook(lambda m, a, i=i: inputs.__setitem__(i, a[0]))
        for i, layer in enumerate(tiny.model.model.encoder.layers)
    ]
    with torch.no_grad():
        tiny.model.model.encoder(other)
    for hk in hooks:
        hk.remove()
    models = {}
    for name, plan in (("lowrank", lowrank), ("pruned", pruned)):
        models[name] = copy.deepcopy(tiny.model)
        counts = compress_encoder(models[name], plan, stats)
        assert counts["after"]["encoder"] == plan_encoder_params(tiny.model, plan)
    errors = {"lowrank": 0.0, "pruned": 0.0}
    with torch.no_grad():
        for i, dense in enumerate(tiny.model.model.encoder.layers):
            ffn = lambda layer, x: layer.fc2(torch.nn.functional.gelu(layer.fc1(x)))  # noqa: E731
            want = ffn(dense, inputs[i])
            for name, model in models.items():
                errors[name] += float(
                    (ffn(model.model.encoder.layers[i], inputs[i]) - want).pow(2).sum() / want.pow(2).sum()
                )
    assert errors["pruned"] < errors["lowrank"], errors

    folder = save_compressed(models["pruned"], tmp_path / "m", [ADAPTWIN.block(pruned)], {"base_model": "tiny.en"})
    tiny.tokenizer.save_pretrained(str(folder))
    tiny.feature_extractor.save_pretrained(str(folder))
    reloaded = load_model(str(folder))
    mel = _mel(tiny)
    assert _greedy_tokens(reloaded, mel) == _greedy_tokens(_copy_bundle(tiny, models["pruned"]), mel)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["compression"]["methods"][0]["plan"]["layers"]["1"]["ffn_keep"] += 1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(Exception, match="fc1"):
        load_compressed(folder)


def test_allocation_meets_the_budget_and_beats_uniform_plain_svd(tiny):
    """On real speech the speaker-aware plan's encoder output error is far below plain
    uniform SVD at the same parameter count, on a held-out clip too."""
    require_data(LJSPEECH)
    from asr_app.compression.adaptwin.allocate import allocate_ranks, plan_encoder_params, uniform_plan
    from asr_app.compression.adaptwin.apply import compress_encoder
    from asr_app.compression.calibrate import collect_activation_stats, measure_sensitivity

    fit = _mel(tiny, LJSPEECH / "wavs" / "LJ001-0001.flac")
    other = _mel(tiny, LJSPEECH / "wavs" / "LJ001-0002.flac")
    stats = collect_activation_stats(tiny.model, [fit])
    gains = measure_sensitivity(tiny.model, fit)
    assert all(g > 0 for row in gains for g in row.values())
    adaptive = allocate_ranks(tiny.model, 0.55, stats, gains)
    plain = uniform_plan(tiny.model, 0.55)
    errors = {}
    for name, plan, st in (("adaptive", adaptive, stats), ("plain", plain, None)):
        model = copy.deepcopy(tiny.model)
        counts = compress_encoder(model, plan, st)
        assert counts["after"]["encoder"] == plan_encoder_params(tiny.model, plan)
        assert counts["after"]["encoder"] <= 0.55 * counts["before"]["encoder"]
        assert counts["after"]["encoder"] > 0.53 * counts["before"]["encoder"]  # the budget is used
        with torch.no_grad():
            want = tiny.model.model.encoder(other).last_hidden_state
            got = model.model.encoder(other).last_hidden_state
        errors[name] = float((got - want).pow(2).sum() / want.pow(2).sum())
    assert errors["adaptive"] < 0.5 * errors["plain"], errors


def test_merged_lora_equals_unmerged_and_layerwise_distillation_learns(tiny):
    from asr_app.compression.adaptwin.allocate import uniform_plan
    from asr_app.compression.adaptwin.apply import compress_encoder
    from asr_app.compression.distill import TrainConfig, layerwise_distill
    from asr_app.compression.lora import add_lora, merge_lora

    mel = _mel(tiny)
    model = copy.deepcopy(tiny.model)
    compress_encoder(model, uniform_plan(model, 0.5))
    peft_model = add_lora(model, rank=4)
    result = layerwise_distill(peft_model, tiny.model, [mel], TrainConfig(steps=6, lr=5e-3, checkpoint_every=100))
    assert result["steps"] == 6
    with torch.no_grad():
        unmerged = peft_model.base_model.model.model.encoder(mel).last_hidden_state
    merged = merge_lora(peft_model)
    with torch.no_grad():
        torch.testing.assert_close(merged.model.encoder(mel).last_hidden_state, unmerged, rtol=1e-4, atol=1e-4)
        start = copy.deepcopy(tiny.model)
        compress_encoder(start, uniform_plan(start, 0.5))
        want = tiny.model.model.encoder(mel).last_hidden_state
        before = (start.model.encoder(mel).last_hidden_state - want).pow(2).mean()
        after = (merged.model.encoder(mel).last_hidden_state - want).pow(2).mean()
    assert after < before


def _layerwise_first_loss_parts(teacher, student, mel):
    """(own, imitate): sums over layers of nmse(S_i(s_{i-1}), y_i) and nmse(S_i(t_{i-1}), y_i),
    recomputed layer by layer from plain forwards."""
    t_enc, s_enc = teacher.model.encoder, student.model.encoder
    nmse = lambda a, y: float((a - y).pow(2).mean() / y.pow(2).mean())  # noqa: E731

    def run(layer, x):
        out = layer(x, None)
        return out[0] if isinstance(out, tuple) else out

    with torch.no_grad():
        x_t = t_enc(mel, output_hidden_states=True).hidden_states[0]  # after the conv front end
        x_s, own, imitate = x_t, 0.0, 0.0
        for t_layer, s_layer in zip(t_enc.layers, s_enc.layers):
            y, out = run(t_layer, x_t), run(s_layer, x_s)
            own, imitate = own + nmse(out, y), imitate + nmse(run(s_layer, x_t), y)
            x_t, x_s = y, out
    return own, imitate


def _first_layerwise_loss(student, teacher, mel, cfg, start_step: int = 0) -> float:
    from asr_app.compression.distill import layerwise_distill
    from asr_app.compression.lora import add_lora

    losses = []
    layerwise_distill(
        add_lora(copy.deepcopy(student), rank=4),
        teacher,
        [mel],
        cfg,
        start_step=start_step,
        on_step=lambda step, loss: losses.append(loss),
    )
    return losses[0]


def test_layerwise_loss_feeds_each_layer_its_own_and_the_teachers_input(tiny):
    """The reported loss of the first step is (sum_i nmse(S_i(s_{i-1}), y_i) + w * nmse(S_i(t_{i-1}),
    y_i)) / layers, recomputed here layer by layer from plain forwards (LoRA starts at zero)."""
    from asr_app.compression.adaptwin.allocate import uniform_plan
    from asr_app.compression.adaptwin.apply import compress_encoder
    from asr_app.compression.distill import TrainConfig

    mel = _mel(tiny)
    student = copy.deepcopy(tiny.model)
    compress_encoder(student, uniform_plan(student, 0.5))
    own, imitate = _layerwise_first_loss_parts(tiny.model, student, mel)
    n = len(student.model.encoder.layers)
    assert imitate > 0 and own > imitate  # errors compound along the student's own chain
    for weight in (0.0, 1.0, 0.5):
        loss = _first_layerwise_loss(
            student, tiny.model, mel, TrainConfig(steps=1, lr=1e-6, teacher_input_weight=weight)
        )
        assert loss == pytest.approx((own + weight * imitate) / n, rel=1e-4), weight
    with pytest.raises(ValueError, match="teacher_input_weight"):
        TrainConfig(teacher_input_weight=-1)


def test_vtlp_warps_the_mel_axis_and_layerwise_distills_on_the_warped_window(tiny):
    """warp_mel moves spectral detail along the mel axis only (up for alpha > 1), is the identity
    at alpha 1; with cfg.vtlp layer-wise distillation's loss at a step is the one computed on
    the window warped by the factor drawn from the generator seeded with that step (here step
    3 of a resumed run)."""
    from asr_app.compression.adaptwin.allocate import uniform_plan
    from asr_app.compression.adaptwin.apply import compress_encoder
    from asr_app.compression.distill import TrainConfig, warp_mel

    peak = torch.zeros(2, 80, 5)
    peak[:, 40, 3] = 1.0
    warped = warp_mel(peak, torch.tensor([1.1, 0.9]))
    assert warped[0, :, 3].argmax() == 44 and warped[1, :, 3].argmax() == 36
    assert warped[:, :, [0, 1, 2, 4]].abs().max() == 0  # frames untouched
    mel = _mel(tiny)
    torch.testing.assert_close(warp_mel(mel, torch.ones(1)), mel)
    with pytest.raises(ValueError, match="shape"):
        warp_mel(mel, torch.ones(2))
    with pytest.raises(ValueError, match="> 0"):
        warp_mel(mel, torch.zeros(1))
    with pytest.raises(ValueError, match="vtlp"):
        TrainConfig(vtlp=0.5)

    student = copy.deepcopy(tiny.model)
    compress_encoder(student, uniform_plan(student, 0.5))
    alpha = 1 + 0.2 * (2 * torch.rand(1, generator=torch.Generator().manual_seed(3)) - 1)
    assert abs(float(alpha) - 1) > 0.01
    own, imitate = _layerwise_first_loss_parts(tiny.model, student, warp_mel(mel, alpha))
    plain_own, plain_imitate = _layerwise_first_loss_parts(tiny.model, student, mel)
    assert own + imitate != pytest.approx(plain_own + plain_imitate, rel=1e-3)
    loss = _first_layerwise_loss(student, tiny.model, mel, TrainConfig(steps=4, lr=1e-6, vtlp=0.2), start_step=3)
    assert loss == pytest.approx((own + imitate) / len(student.model.encoder.layers), rel=1e-4)


def test_saved_compressed_model_reloads_and_decodes_identically(tiny, tmp_path):
    from asr_app.compression.adaptwin.apply import compress_encoder
    from asr_app.compression.adaptwin.config import CompressionPlan
    from asr_app.compression.adaptwin.method import ADAPTWIN
    from asr_app.compression.checkpoint import load_compressed, save_compressed
    from asr_app.models import load_model

    model = copy.deepcopy(tiny.model)
    plan = CompressionPlan.uniform(4, 6, 56, None)  # mild: the reloaded model must still transcribe
    compress_encoder(model, plan)
    folder = save_compressed(model, tmp_path / "m", [ADAPTWIN.block(plan)], {"base_model": "tiny.en"})
    tiny.tokenizer.save_pretrained(str(folder))
    tiny.feature_extractor.save_pretrained(str(folder))
    reloaded = load_model(str(folder))
    mel = _mel(tiny)
    want = _greedy_tokens(_copy_bundle(tiny, model), mel)
    assert _greedy_tokens(reloaded, mel) == want
    assert len(want) > 10
    # a checkpoint whose weights do not match its plan is refused, naming keys
    import json

    cfg = json.loads((folder / "config.json").read_text())
    cfg["compression"]["methods"][0]["plan"]["layers"]["0"]["fc1"] = 7
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(Exception, match="fc1"):
        load_compressed(folder)


def _small_profile(tmp_path, n=12):
    from asr_app.audio import load_audio
    from asr_app.datasets import load_dataset
    from asr_app.enroll.profile import Profile

    profile = Profile.create_or_open(tmp_path / "spk", speaker="lj")
    for utt in load_dataset(LJSPEECH, "LJ001-*", n):
        profile.add_take(load_audio(utt.audio), utt.text, utt.id, 1, source="import")
    return profile


def test_adapt_resumes_after_interruption_and_profile_loads_its_model(tiny, tmp_path, monkeypatch):
    require_data(LJSPEECH)
    from asr_app.adapt import AdaptOptions, run_adapt
    from asr_app.cli import main

    monkeypatch.setenv("ASR_APP_DATA_DIR", str(tmp_path / "data"))
    profile = _small_profile(tmp_path)
    opts = AdaptOptions.from_flat(
        target_ratio=0.7,
        layerwise_epochs=1,
        finetune_epochs=1,
        batch_size=1,
        lora_rank=4,
        control=False,
        checkpoint_every=2,
        threads=TEST_THREADS,
        decoder_keep=0.8,
        decoder_attention_rank=56,
    )
    events = []

    def interrupt(kind, payload):
        events.append((kind, payload))
        if kind == "progress" and payload[0] == "finetune" and payload[1] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_adapt(profile, opts, interrupt)
    run_dir = profile.path / "adapt" / opts.run_name()
    assert (run_dir / "finetune.ckpt.safetensors").is_file() and (run_dir / "layerwise.safetensors").is_file()
    events.clear()
    report = run_adapt(profile, opts, events.append if False else (lambda k, p: events.append((k, p))))
    infos = [p for k, p in events if k == "info"]
    assert any("finetune: resuming at step 2" in i for i in infos), infos
    assert not [p for k, p in events if k == "progress" and p[0] == "layerwise"]  # finished stage not redone
    assert report.stages["finetune"]["steps"] == report.stages["finetune"]["planned_steps"]
    assert 0.29 < report.params["removed_share"]["encoder"] < 0.31
    # a fifth of fc1/fc2 (3.2% of the decoder) and 8/64 of the attention (2.0%); embeddings dense
    assert 0.045 < report.params["removed_share"]["decoder"] < 0.06
    assert report.plan["decoder_attention"] == 56
    assert (run_dir / "decoder_stats.safetensors").is_file()  # the resumed run factored from the same statistics
    assert set(report.wer["heldout"]) >= {"original", "compressed"}
    # the profile now lists the model, and --profile-dir loads it
    assert profile.meta()["models"][-1]["name"] == opts.run_name()
    out = tmp_path / "out"
    assert (
        main(
            [
                "transcribe",
                str(JFK),
                "--profile-dir",
                str(profile.path),
                "--output-dir",
                str(out),
                "--format",
                "txt",
                "--quiet",
            ]
        )
        == 0
    )
    assert "country" in (out / "jfk.txt").read_text().lower()


def test_adapt_on_a_profile_without_held_out_takes_saves_and_says_why_no_held_out_wer(tiny, tmp_path, monkeypatch):
    """Enrollment holds out every tenth take, so a profile of a few takes has none: adapt
    used to train, save, then fail in evaluation reading an empty held-out split."""
    require_data(LJSPEECH)
    from asr_app.adapt import AdaptOptions, run_adapt

    monkeypatch.setenv("ASR_APP_DATA_DIR", str(tmp_path / "data"))
    profile = _small_profile(tmp_path, n=6)
    assert not profile.takes("heldout")
    events = []
    report = run_adapt(
        profile,
        AdaptOptions.from_flat(target_ratio=0.7, stages=(), control=False, threads=TEST_THREADS),
        lambda k, p: events.append((k, p)),
    )
    assert "heldout" not in report.wer
    assert any("no held-out takes" in p for k, p in events if k == "info")
    assert profile.meta()["models"][-1]["name"] == AdaptOptions.from_flat(target_ratio=0.7, stages=()).run_name()


def test_packed_windows_carry_timestamped_targets(tiny):
    require_data(LJSPEECH)
    from asr_app.adapt import pack_windows, training_text
    from asr_app.datasets import load_dataset

    assert training_text("THE MAN SAID I WAS THERE") == "The man said I was there"
    assert training_text("Keep  Case, as written.") == "Keep Case, as written."
    utts = load_dataset(LJSPEECH, "LJ001-000*", 6)
    windows = pack_windows(utts, tiny)
    sp = tiny.special
    total_s = sum(w.audio_s for w in windows)
    assert len(windows) >= 2 and all(w.audio_s <= 29.0 for w in windows)
    from asr_app.audio import load_audio

    assert abs(total_s - sum(len(load_audio(u.audio)) / 16000 for u in utts)) < 0.01  # nothing dropped
    first = windows[0].labels
    assert first[0] == sp.timestamp_begin and first[-1] == sp.eot  # <|0.00|> ... <|endoftext|>
    stamps = [t - sp.timestamp_begin for t in first if t >= sp.timestamp_begin]
    assert stamps == sorted(stamps) and len(stamps) % 2 == 0
    assert abs(stamps[-1] * 0.02 - windows[0].audio_s) <= 0.02  # last end = window's audio length
    text = tiny.tokenizer.decode([t for t in first if t < sp.eot])
    assert text.strip().startswith(utts[0].text.split()[0])
    assert windows[0].mel.shape == (80, 3000)


def test_speed_perturbation_moves_tempo_pitch_and_timestamps(tiny):
    require_data(LJSPEECH)
    import numpy as np

    from asr_app.adapt import AdaptOptions, pack_windows, speed_perturb
    from asr_app.datasets import load_dataset

    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    fast = speed_perturb(tone, 1.1)
    assert fast.dtype == np.float32 and abs(len(fast) - 16000 / 1.1) < 16000 * 0.01
    peak_hz = np.argmax(np.abs(np.fft.rfft(fast))) * 16000 / len(fast)
    assert abs(peak_hz - 484) < 5  # pitch moves with tempo: 440 Hz played 1.1x faster
    assert speed_perturb(tone, 1.0) is tone

    utts = load_dataset(LJSPEECH, "LJ001-000*", 3)
    plain, slow = pack_windows(utts, tiny), pack_windows(utts, tiny, speed=0.9)
    assert abs(sum(w.audio_s for w in slow) - sum(w.audio_s for w in plain) / 0.9) < 0.05
    sp = tiny.special
    stamps = [tok - sp.timestamp_begin for tok in slow[0].labels if tok >= sp.timestamp_begin]
    assert abs(stamps[-1] * 0.02 - slow[0].audio_s) <= 0.02  # timestamps follow the slower audio
    assert [tok for tok in slow[0].labels if tok < sp.timestamp_begin] == [
        tok for tok in plain[0].labels if tok < sp.timestamp_begin
    ]  # same words

    assert AdaptOptions.from_flat(speed_perturb=()).run_name().endswith("-spoff")
    assert AdaptOptions().run_name() == "tiny.en-keep0.85"
    # options that change training name their own run folder (a resume refuses other options)
    assert AdaptOptions.from_flat(kd_weight=1.0, layerwise_teacher_input=0).run_name() == "tiny.en-keep0.85-kd1-lwti0"
    with pytest.raises(ValueError, match="layerwise_teacher_input"):
        AdaptOptions.from_flat(layerwise_teacher_input=-1)
    for bad in ((1.0,), (3.0,)):
        with pytest.raises(ValueError, match="speed_perturb"):
            AdaptOptions.from_flat(speed_perturb=bad)


def test_finetune_lora_trains_only_the_part_it_is_told(tiny, tmp_path):
    require_data(LJSPEECH)
    import json
    import random

    from asr_app.adapt import AdaptError, AdaptOptions, pack_windows
    from asr_app.adapt.data import batches as make_batches
    from asr_app.adapt.state import RunState
    from asr_app.compression.adaptwin.allocate import uniform_plan
    from asr_app.compression.adaptwin.apply import compress_encoder
    from asr_app.compression.distill import TrainConfig, finetune
    from asr_app.compression.lora import add_lora, lora_targets, merge_lora
    from asr_app.datasets import load_dataset

    batches = make_batches(pack_windows(load_dataset(LJSPEECH, "LJ001-000*", 2), tiny), 1, random.Random(0), True)
    for part in ("encoder", "decoder", "both"):
        model = copy.deepcopy(tiny.model)
        compress_encoder(model, uniform_plan(model, 0.5))
        before = {k: v.clone() for k, v in model.state_dict().items()}
        peft_model = add_lora(model, rank=4, targets=lora_targets(part))
        result = finetune(peft_model, batches, TrainConfig(steps=2, lr=5e-3, checkpoint_every=100))
        assert result["steps"] == 2 and result["final_loss"] == result["final_loss"]  # not NaN
        after = merge_lora(peft_model).state_dict()
        assert set(after) == set(before)
        changed = {k.split(".")[1] for k in before if not torch.equal(before[k], after[k])}
        assert changed == {"encoder": {"encoder"}, "decoder": {"decoder"}, "both": {"encoder", "decoder"}}[part]
    with pytest.raises(ValueError, match="encoder"):
        lora_targets("embeddings")
    with pytest.raises(ValueError, match="finetune_lora"):
        AdaptOptions.from_flat(finetune_lora="embeddings")
    assert AdaptOptions.from_flat(finetune_lora="encoder").run_name() == "tiny.en-keep0.85-ftencoder"
    assert AdaptOptions().run_name() == "tiny.en-keep0.85"
    # a run folder written before the option existed fine-tuned the encoder: it resumes as that
    opts = AdaptOptions.from_flat(finetune_lora="encoder")
    # (state.json as the single-method code wrote it: flat options, no "methods", stage "factor")
    state = {k: v for k, v in opts.to_flat().items() if k not in ("finetune_lora", "methods")}
    (tmp_path / "state.json").write_text(json.dumps({"options": state, "stages": {"factor": {}}}))
    assert RunState(tmp_path, opts).done("adaptwin.factor") == {}
    with pytest.raises(AdaptError, match="other options"):
        RunState(tmp_path, AdaptOptions())


def test_adapt_trains_on_a_gpu_when_torch_sees_one(monkeypatch):
    from asr_app.cli import build_parser, resolve_train_device

    args = build_parser().parse_args(["adapt", "--profile", "me"])
    assert args.device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_train_device("auto") == "cuda"
    assert resolve_train_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_train_device("auto") == "cpu"
    assert resolve_train_device("cuda") == "cuda"  # load_model says there is none, in one line


def test_adapt_advises_a_larger_ratio_when_the_compressed_model_loses_more_than_two_points(monkeypatch, capsys):
    from asr_app import adapt
    from asr_app.cli import main
    from asr_app.enroll import profile as profile_mod

    report = adapt.AdaptReport(
        profile="me",
        options={"target_ratio": 0.55},
        model_dir="/nowhere",
        params={
            "original": {"encoder_attention": 4, "encoder": 10, "model": 20},
            "compressed": {"encoder_attention": 2, "encoder": 5, "model": 15},
            "removed_share": {"encoder_attention": 0.5, "encoder": 0.5, "model": 0.25},
        },
        wer={
            "heldout": {"set": "h", "utterances": 3, "original": 3.77, "compressed": 3.08},
            "general": {"set": "g", "utterances": 40, "original": 5.49, "compressed": 12.84},
            "speaker": {"set": "s", "utterances": 59, "original": 3.93},
        },
    )
    assert report.wer_increase() == {"heldout": -0.69, "general": 7.35}  # the speaker set lacks a compressed WER
    advice = report.advice()
    assert "7.35 points on general" in advice and "heldout" not in advice and "--target-ratio than 0.55" in advice
    assert report.advice(limit=8.0) is None
    # a loss just over the limit reads as over it (2.04, not a rounded "2.0")
    near = adapt.AdaptReport(profile="me", options={}, wer={"heldout": {"original": 4.08, "compressed": 6.12}})
    assert "2.04 points on heldout" in near.advice()
    # the command prints it after the WER lines, and not when every set is within the limit
    monkeypatch.setattr(profile_mod.Profile, "open", classmethod(lambda cls, path: object()))
    monkeypatch.setattr(adapt, "run_adapt", lambda profile, opts, on_event: report)
    assert main(["adapt", "--profile", "me", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.index("WER on general") < out.index("note: the compressed model loses")
    report.wer["general"]["compressed"] = 6.0
    assert main(["adapt", "--profile", "me", "--device", "cpu"]) == 0
    assert "note:" not in capsys.readouterr().out


def test_the_default_size_is_explained_and_a_chosen_one_is_not():
    from asr_app.adapt import AdaptOptions
    from asr_app.adapt.report import size_note

    note = size_note(AdaptOptions())
    assert note is not None and note.startswith("15% of the encoder removed: the default")
    assert "--target-ratio 0.75 removes 25%" in note and "0.55 removes 45%" in note
    assert size_note(AdaptOptions.from_flat(target_ratio=0.55)) is None
    assert size_note(AdaptOptions.from_flat(("fvt",))) is None  # no encoder compression
