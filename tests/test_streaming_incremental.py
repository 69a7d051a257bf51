"""Live mode on a CALD model: the buffer's encoding kept up to date as audio arrives equals
encoding the buffer's live log-mel at once, with Whisper's padding to a chunk boundary."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from asr_app.compression.cald.apply import convert_encoder
from asr_app.compression.cald.encoder import encode_frames
from asr_app.streaming.incremental import IncrementalEncoder
from asr_app.streaming.log_mel import StreamingLogMel
from tests.compression.test_cald_train import _whisper


def _bundle(model):
    from transformers import WhisperFeatureExtractor

    return SimpleNamespace(model=model, backend="torch", feature_extractor=WhisperFeatureExtractor())


def _at_once(bundle, audio, pad, step):
    mel = torch.from_numpy(StreamingLogMel(bundle.feature_extractor.mel_filters).push(audio))
    frames = -(-(mel.shape[1] + pad) // step) * step
    return encode_frames(bundle.model, torch.cat([mel, torch.zeros(mel.shape[0], frames - mel.shape[1])], 1))[None]


def test_incremental_features_equal_the_buffer_encoded_at_once():
    model = _whisper()
    convert_encoder(model, chunk_frames=8, window_frames=4)
    bundle = _bundle(model)
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    inc = IncrementalEncoder(bundle, pad_frames=5)
    at = 0
    for n in (300, 1200, 160, 4000, 7000):
        inc.push(audio[at : at + n])
        at += n
        got = inc.features()
        torch.testing.assert_close(got, _at_once(bundle, audio[:at], 5, 16), atol=1e-5, rtol=1e-5)
    inc.invalidate()  # a cut: nothing is read or encoded until the reset from what is left
    inc.push(audio[:4000])
    with pytest.raises(RuntimeError, match="reset"):
        inc.features()
    inc.reset(audio[5000:at])  # positions start again at the buffer's start
    torch.testing.assert_close(inc.features(), _at_once(bundle, audio[5000:at], 5, 16), atol=1e-5, rtol=1e-5)


def test_only_a_torch_cald_runner_gets_an_incremental_encoder():
    model = _whisper()
    bundle = _bundle(model)
    assert IncrementalEncoder.for_runner(bundle, SimpleNamespace(content_pad_frames=None)) is None
    convert_encoder(model, chunk_frames=8, window_frames=4)
    assert IncrementalEncoder.for_runner(SimpleNamespace(backend="onnx"), SimpleNamespace(content_pad_frames=0)) is None
    assert isinstance(IncrementalEncoder.for_runner(bundle, SimpleNamespace(content_pad_frames=0)), IncrementalEncoder)


def test_encoder_padding_is_an_option_of_decoding_live_and_bench():
    from asr_app.cli import build_parser
    from asr_app.cli.common import transcribe_options
    from asr_app.cli.transcribe import live_options
    from asr_app.decoding import DecodingOptions

    with pytest.raises(ValueError, match="encoder_padding_s"):
        DecodingOptions(encoder_padding_s=-1)
    args = build_parser().parse_args(["transcribe", "x.wav", "--encoder-padding", "6"])
    assert transcribe_options(args, vad=True).decoding.encoder_padding_s == 6.0
    assert live_options(args).decoding.encoder_padding_s == 6.0
    args = build_parser().parse_args(["bench", "x.wav", "--live"])
    assert live_options(args).decoding.encoder_padding_s is None
