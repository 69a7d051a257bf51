"""Audio decoding: formats, rates, channels, and every kind of bad file."""

import numpy as np
import pytest
import soundfile as sf

from asr_app.audio import N_FRAMES, load_audio, log_mel_window
from asr_app.errors import AudioError


def _tone(sr, seconds=1.0, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.mark.parametrize(
    "fmt,subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")]
)
def test_formats_rates_and_channels_become_16k_mono(tmp_path, fmt, subtype):
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, _tone(44_100, 1.0, channels=2), 44_100, format=fmt, subtype=subtype)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16_000) < 1200  # mp3 adds encoder padding
    assert 0.15 < np.abs(audio).max() < 0.5


def test_bad_files_each_get_a_clear_reason(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("this is not audio\n" * 50)
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), 16_000)
    sf.write(tmp_path / "long.wav", _tone(16_000, 2.0), 16_000)
    raw = (tmp_path / "long.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(raw[: len(raw) // 2])
    sf.write(tmp_path / "long.flac", _tone(16_000, 5.0), 16_000)
    raw = (tmp_path / "long.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(raw[: len(raw) // 3])
    cases = {
        "missing.wav": "no such file",
        "empty.wav": "empty file",
        "text.wav": "not a readable audio file",
        "zero.wav": "no audio samples",
        "cut.wav": "truncated",
        "cut.flac": "truncated|not a readable",
    }
    for name, reason in cases.items():
        with pytest.raises(AudioError, match=reason) as err:
            load_audio(tmp_path / name)
        assert name in str(err.value)
    with pytest.raises(AudioError, match="folder"):
        load_audio(tmp_path)


def test_log_mel_window_pads_in_log_mel_domain(tiny):
    audio = _tone(16_000, 3.0)
    mel = log_mel_window(tiny.feature_extractor, audio)
    assert mel.shape == (80, N_FRAMES)
    assert not mel[:, 300:].any()  # zeros after the 300 content frames, not "silence" values
    assert mel[:, :300].std() > 0
    with pytest.raises(ValueError):
        log_mel_window(tiny.feature_extractor, np.zeros(480_001, np.float32))


def test_log_mel_matches_faster_whisper(tiny):
    fw = pytest.importorskip("faster_whisper.feature_extractor")
    from tests.conftest import JFK, require_data

    require_data(JFK)
    audio = load_audio(JFK)
    ours = log_mel_window(tiny.feature_extractor, audio)
    theirs = fw.FeatureExtractor()(audio)
    n = len(audio) // 160
    np.testing.assert_allclose(ours[:, :n], theirs[:, :n], atol=1e-4)


def test_m4a_goes_through_pyav(tmp_path):
    """libsndfile cannot read AAC in MP4; the PyAV (FFmpeg) fallback decodes and resamples it."""
    av = pytest.importorskip("av")
    sr = 22_050
    x = _tone(sr, 1.0)
    path = tmp_path / "clip.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=sr)
        stream.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(np.stack([x, x]), format="fltp", layout="stereo")
        frame.sample_rate = sr
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            container.mux(packet)
    audio = load_audio(path)
    assert abs(len(audio) - 16_000) < 1_500  # AAC priming/padding frames
    assert 0.15 < np.abs(audio).max() < 0.6
