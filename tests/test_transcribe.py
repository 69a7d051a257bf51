"""Whole-file transcription on real speech: short, long-form, silence, noise, VAD mapping."""

import numpy as np
import pytest

from asr_app.audio import load_audio
from asr_app.datasets import load_dataset
from asr_app.vad import SpeechView
from asr_app.wer import corpus_wer, normalize
from tests.conftest import JFK, LJSPEECH, TEST_CLEAN, require_data


def test_jfk_is_transcribed_with_segment_times(transcriber):
    require_data(JFK)
    t = transcriber.transcribe_file(JFK)
    assert normalize(t.text) == normalize(
        "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
    )
    assert t.language == "en" and abs(t.duration_s - 11.0) < 0.01
    assert t.segments[0].start_s < 1.0 and 9.0 < t.segments[-1].end_s <= 11.0
    assert t.rtf > 0


def test_thirty_seconds_of_silence_gives_an_empty_transcript(transcriber):
    t = transcriber.transcribe_audio(np.zeros(30 * 16_000, np.float32))
    assert t.text == "" and t.segments == []


def test_noise_gives_no_invented_text(transcriber):
    noise = np.random.default_rng(0).normal(0, 0.01, 30 * 16_000).astype(np.float32)
    assert transcriber.transcribe_audio(noise).text == ""


def _long_recording():
    """~75 s: four test-clean utterances, JFK and LJSpeech clips, with pauses between."""
    require_data(TEST_CLEAN, LJSPEECH, JFK)
    utts = load_dataset(TEST_CLEAN) + load_dataset(LJSPEECH, "LJ001-000[1-4]")
    pieces, refs = [], []
    gap = np.zeros(16_000, np.float32)
    for u in utts:
        pieces += [load_audio(u.audio), gap]
        refs.append(u.text)
    pieces.append(load_audio(JFK))
    refs.append(
        "and so my fellow americans ask not what your country can do for you ask what you can do for your country"
    )
    return np.concatenate(pieces), " ".join(refs)


@pytest.mark.slow
@pytest.mark.parametrize("vad", [True, False])
def test_long_form_loses_and_repeats_nothing(tiny, vad):
    from asr_app.transcribe import TranscribeOptions, Transcriber

    audio, reference = _long_recording()
    assert len(audio) > 60 * 16_000
    t = Transcriber(TranscribeOptions(vad=vad), bundle=tiny).transcribe_audio(audio)
    wer = corpus_wer([reference], [t.text]).wer
    assert wer < 0.12, (wer, t.text)
    words = normalize(t.text).split()
    grams = [tuple(words[i : i + 6]) for i in range(len(words) - 5)]
    assert len(grams) == len(set(grams)), "a 6-word run appears twice: text repeated at a window boundary"
    starts = [s.start_s for s in t.segments]
    assert starts == sorted(starts)
    assert all(s.start_s <= s.end_s <= t.duration_s + 0.01 for s in t.segments)
    assert t.segments[-1].end_s > 60.0  # times are in the original audio, past the first windows


def test_speech_view_stitches_and_maps_times_back():
    audio = np.arange(100, dtype=np.float32)
    view = SpeechView(audio, [(10, 20), (50, 60)])
    assert len(view) == 20
    np.testing.assert_array_equal(view.slice(5, 15), np.r_[15:20, 50:55].astype(np.float32))
    # 15 stitched samples in = 5 samples into the second chunk = sample 55
    assert view.to_original_s(15 / 16_000) == pytest.approx(55 / 16_000)
    assert view.to_original_s(10 / 16_000, is_end=True) == pytest.approx(20 / 16_000)
    assert view.to_original_s(10 / 16_000) == pytest.approx(50 / 16_000)


def test_beam_search_transcribes_and_beats_or_matches_greedy_logprob(tiny):
    from asr_app.audio import log_mel_window
    from asr_app.decoding import DecodingOptions, WindowDecoder

    require_data(JFK)
    mel = log_mel_window(tiny.feature_extractor, load_audio(JFK))
    greedy = WindowDecoder(tiny, DecodingOptions(temperatures=(0.0,))).decode(mel)
    beam = WindowDecoder(tiny, DecodingOptions(beam_size=4, temperatures=(0.0,))).decode(mel)
    assert "ask what you can do for your country" in normalize(beam.text)
    assert beam.avg_logprob >= greedy.avg_logprob - 1e-6  # beam search finds a likelier sequence
