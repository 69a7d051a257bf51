"""The live log-mel: final frames, computed once, equal to Whisper's where the loudest frame
comes first, and the same whatever the pieces the audio arrives in."""

from __future__ import annotations

import numpy as np
import pytest

from asr_app.onnx.runtime import NumpyLogMel
from asr_app.streaming.log_mel import StreamingLogMel


def _filters():
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor().mel_filters


def _signal(seconds=3.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    audio = 0.1 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.7 * t)) + 0.01 * rng.standard_normal(t.size)
    audio[:4000] *= 5  # the loudest part first: the running maximum is the window's maximum
    return audio.astype(np.float32)


@pytest.mark.parametrize("pieces", [[48000], [100, 101, 5000, 160, 7, 30000], [1600] * 30])
def test_frames_equal_whispers_log_mel_and_do_not_depend_on_the_pieces(pieces):
    audio = _signal()
    stream = StreamingLogMel(_filters())
    out, at = [], 0
    for n in [*pieces, len(audio)]:  # the last push takes the rest
        out.append(stream.push(audio[at : at + n]))
        at += n
    got = np.concatenate(out, axis=1)
    assert got.shape[1] == stream.frames == (len(audio) - 200) // 160 + 1  # final frames only
    want = NumpyLogMel(_filters()).log_mel(audio)
    np.testing.assert_allclose(got, want[:, : got.shape[1]], atol=2e-5)


def test_a_later_louder_frame_changes_nothing_before_it():
    rng = np.random.default_rng(1)  # near-silence, then a loud tone: Whisper's floor lifts the start
    quiet = 1e-6 * rng.standard_normal(8000)
    loud = 0.5 * np.sin(2 * np.pi * 440 * np.arange(24000) / 16000)
    audio = np.concatenate([quiet, loud]).astype(np.float32)
    stream = StreamingLogMel(_filters())
    first = stream.push(audio[:6000])  # before the loud part
    stream.push(audio[6000:])
    at_once = StreamingLogMel(_filters()).push(audio)  # the whole signal in one push
    np.testing.assert_allclose(at_once[:, : first.shape[1]], first, atol=1e-6)
    # Whisper's own normalisation looks ahead: the loud end lifts the floor of the quiet start
    whisper = NumpyLogMel(_filters()).log_mel(audio)[:, : first.shape[1]]
    assert np.abs(whisper - first).max() > 0.1
    with pytest.raises(ValueError, match="mel_filters"):
        StreamingLogMel(np.zeros((80, 201), np.float32))
