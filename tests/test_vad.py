"""silero-vad on onnxruntime (numpy driver) against silero-vad's own torch pipeline."""

import numpy as np
import pytest

from asr_app.audio import load_audio
from asr_app.datasets import load_dataset
from asr_app.vad import FRAME_SAMPLES, SileroVad, VadOptions, speech_chunks, speech_probabilities, speech_regions
from tests.conftest import JFK, TRAIN_CLEAN_5, require_data


@pytest.fixture(scope="module")
def clips():
    require_data(JFK, TRAIN_CLEAN_5)
    audio = [load_audio(JFK)] + [load_audio(u.audio) for u in load_dataset(TRAIN_CLEAN_5, limit=6)]
    gap = np.zeros(3 * 16_000, np.float32)
    return audio + [np.concatenate([audio[1], gap, audio[2], gap[:8000], audio[3]])]


def test_speech_chunks_equal_silero_vads_own_get_speech_timestamps(clips):
    torch = pytest.importorskip("torch")
    from silero_vad import get_speech_timestamps, load_silero_vad

    reference = load_silero_vad()  # the torch (JIT) model silero-vad loads by default
    for options in (VadOptions(), VadOptions(min_silence_ms=300, speech_pad_ms=30), VadOptions(threshold=0.7)):
        for audio in clips:
            want = get_speech_timestamps(
                torch.from_numpy(audio),
                reference,
                threshold=options.threshold,
                sampling_rate=16_000,
                min_speech_duration_ms=options.min_speech_ms,
                min_silence_duration_ms=options.min_silence_ms,
                speech_pad_ms=options.speech_pad_ms,
            )
            assert speech_chunks(audio, options) == [(d["start"], d["end"]) for d in want]


def test_probabilities_equal_silero_frame_by_frame_and_any_chunking(clips):
    torch = pytest.importorskip("torch")
    from silero_vad import load_silero_vad

    audio = clips[0]
    model = load_silero_vad(onnx=True)
    want = []
    for i in range(0, len(audio) - FRAME_SAMPLES + 1, FRAME_SAMPLES):
        want.append(float(model(torch.from_numpy(audio[i : i + FRAME_SAMPLES]), 16_000)))
    whole = speech_probabilities(audio)
    np.testing.assert_allclose(whole[: len(want)], want, atol=1e-5)
    vad = SileroVad()
    pieces = [vad.probabilities(c) for c in np.array_split(audio, 97)]  # uneven chunks, some under a frame
    np.testing.assert_allclose(np.concatenate(pieces), whole[: len(audio) // FRAME_SAMPLES], atol=1e-6)
    assert vad.flush().shape == ((1,) if len(audio) % FRAME_SAMPLES else (0,))


def test_speech_regions_hysteresis_minimum_lengths_and_padding():
    f = FRAME_SAMPLES
    probs = np.array([0, 0.9, 0.9, 0.4, 0.9, 0, 0, 0, 0, 0, 0.9] + [0] * 20, np.float32)
    n = len(probs) * f
    # 0.4 is above the exit threshold (0.35): one region over frames 1-4; frame 10 alone is too short
    opts = VadOptions(min_speech_ms=40, min_silence_ms=100, speech_pad_ms=0)
    assert speech_regions(probs, n, opts) == [(f, 5 * f)]
    assert speech_regions(probs, n, VadOptions(min_speech_ms=20, min_silence_ms=100, speech_pad_ms=0)) == [
        (f, 5 * f),
        (10 * f, 11 * f),
    ]
    padded = speech_regions(probs, n, VadOptions(min_speech_ms=20, min_silence_ms=100, speech_pad_ms=100))
    assert padded[0][0] == 0 and padded[0][1] > 5 * f and padded[1][0] < 10 * f
    assert speech_regions(np.zeros(10, np.float32), 10 * f) == []


def test_vad_and_the_onnx_path_import_no_torch(tmp_path):
    import subprocess
    import sys

    require_data(JFK)
    code = f"""
import sys
from asr_app.vad import speech_chunks
from asr_app.audio import load_audio
assert speech_chunks(load_audio({str(JFK)!r}))
assert 'torch' not in sys.modules, 'torch imported'
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
