"""Streaming transcriber: clock-free replay in fixed chunks against offline transcription."""

import numpy as np
import pytest

from asr_app.audio import load_audio
from asr_app.datasets import load_dataset
from asr_app.streaming import StreamingOptions, StreamingTranscriber
from asr_app.streaming_bench import concatenate_clips, replay
from asr_app.wer import corpus_wer, normalize
from tests.conftest import LJSPEECH, TEST_CLEAN, require_data


def test_silence_never_decodes(tiny):
    s = StreamingTranscriber(tiny)
    for _ in range(50):
        s.insert_audio(np.zeros(1600, np.float32))
        assert s.process() is None
    assert s.finish().committed == "" and s.committed_text == ""


def test_options_are_validated():
    with pytest.raises(ValueError, match="min_chunk_s"):
        StreamingOptions(min_chunk_s=0)
    with pytest.raises(ValueError, match="max_buffer_s"):
        StreamingOptions(max_buffer_s=40)


@pytest.mark.slow
def test_fixed_chunk_replay_commits_what_offline_transcribes(tiny):
    """Deterministic replay (no clock): committed text matches offline, phrase by phrase."""
    from asr_app.transcribe import TranscribeOptions, Transcriber

    require_data(TEST_CLEAN)
    utts = load_dataset(TEST_CLEAN)
    audio, ends = concatenate_clips([load_audio(u.audio) for u in utts])
    reference = " ".join(u.text for u in utts)
    s = StreamingTranscriber(tiny)
    committed, tentative_seen, phrase_updates = [], 0, 0
    for i in range(0, len(audio), 4000):  # 0.25 s chunks, processed at once
        s.insert_audio(audio[i : i + 4000])
        update = s.process()
        if update is not None:
            committed.append(update.committed)
            tentative_seen += len(update.tentative.split())
            phrase_updates += update.phrase_ended
    committed.append(s.finish().committed)
    text = " ".join(c for c in committed if c)
    assert text.split() == s.committed_text.split()  # updates add up to the committed text
    assert phrase_updates >= len(utts) - 1  # each pause between utterances ends a phrase
    offline = Transcriber(TranscribeOptions(), bundle=tiny).transcribe_audio(audio).text
    stream_wer = corpus_wer([reference], [text]).wer
    offline_wer = corpus_wer([reference], [offline]).wer
    # 58 reference words: allow 3 words of difference (one phrase decoded differently)
    assert stream_wer <= offline_wer + 3 / 58 + 1e-9, (text, offline)
    assert normalize(text).split()[-6:] == normalize(offline).split()[-6:]
    assert len(s.committed_ends_s) == len(s.committed_words)
    assert all(0 <= e <= len(audio) / 16_000 + 0.5 for e in s.committed_ends_s)


@pytest.mark.slow
def test_simulated_live_replay_measures_latency_and_keeps_accuracy(tiny):
    require_data(LJSPEECH)
    utts = load_dataset(LJSPEECH, "LJ002-000[1-6]")
    audio, ends = concatenate_clips([load_audio(u.audio) for u in utts])
    report = replay(StreamingTranscriber(tiny), audio, ends)
    summary = report.summary()
    assert summary["phrases"] == len(utts)  # every phrase end was reached and committed
    assert all(lat > 0 for lat in report.eop_latencies_s)  # nothing committed before speech ended
    assert summary["rtf"] > 0 and summary["word_lag_median_s"] > 0
    reference = " ".join(u.text for u in utts)
    assert corpus_wer([reference], [report.text]).wer < 0.10, report.text
    assert normalize(report.text).split()[:3] == normalize(reference).split()[:3]


def test_a_phrase_end_before_the_buffer_decodes_nothing(tiny):
    s = StreamingTranscriber(tiny)
    s.insert_audio(np.zeros(16_000, np.float32))
    s._buffer_start = 16_000  # as after a trim past the phrase's speech
    s._buffer = s._buffer[:0]
    update = s._end_phrase(8_000)
    assert update.committed == "" and update.phrase_ended and s.committed_words == []
