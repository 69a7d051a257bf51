"""`bench --encoder`: the figures it computes, on a small random Whisper (timing values are
not asserted: they belong to benchmarks, not tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asr_app.encoder_bench import encoder_bench, encoder_models, format_report, loglog_slope
from tests.compression.test_cald_train import _whisper


def test_loglog_slope_reads_the_power():
    assert loglog_slope([1, 2, 4, 8], [3, 6, 12, 24]) == pytest.approx(1.0)
    assert loglog_slope([5, 10, 20], [1, 4, 16]) == pytest.approx(2.0)


def test_encoder_bench_reports_every_figure_and_a_fixed_live_state():
    model = _whisper()
    mel = np.random.default_rng(0).standard_normal((model.config.num_mel_bins, 900)).astype(np.float32)
    result = encoder_bench(model, mel, lengths_s=(0.5, 5, 8), repeats=2, live_buffer_s=6, live_hops_s=(0.16, 0.05))
    assert [r["length_s"] for r in result["lengths"]] == [0.5, 5, 8]
    assert all(r["softmax_s"] > 0 and r["cald_s"] > 0 for r in result["lengths"])
    assert result["short_clip_s"] == 0.5 and result["cald_trained"] is False
    assert [len(live["update_s"]) for live in result["live"]] == [38, 120]
    assert all(live["state_fixed_after_first_chunk"] for live in result["live"])
    assert "log-log slope" in format_report(result)
    with pytest.raises(ValueError, match="needs 10 s"):
        encoder_bench(model, mel, lengths_s=(10,), live_buffer_s=1)


def test_a_cald_model_is_timed_as_it_is_beside_its_softmax_form():
    from asr_app.compression.cald.apply import convert_encoder, hybrid_attentions

    model = _whisper()
    softmax, cald, trained = encoder_models(model)
    assert softmax is model and hybrid_attentions(cald) and not hybrid_attentions(model)
    convert_encoder(model, chunk_frames=8, window_frames=4)
    softmax, cald, trained = encoder_models(model)
    assert trained and cald is model
    assert {a.chunk_frames for a in hybrid_attentions(softmax)} == {None}
    mel = torch.randn(model.config.num_mel_bins, 2 * model.config.max_source_positions)
    with torch.no_grad():  # one chunk over everything is the softmax encoder it came from
        torch.testing.assert_close(
            softmax.model.encoder(mel[None]).last_hidden_state, _whisper().model.encoder(mel[None]).last_hidden_state
        )


def test_the_command_line_takes_the_encoder_bench():
    from asr_app.cli import build_parser

    args = build_parser().parse_args(["bench", "clip.wav", "--encoder", "--repeats", "2", "--threads", "2"])
    assert (args.encoder, args.repeats, args.threads) == (True, 2, 2)
    assert args.func.__module__ == "asr_app.cli.bench"
