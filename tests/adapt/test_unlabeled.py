"""Unlabeled audio as training data: the teacher's transcripts, clips of at most 28 s, an
unreadable file skipped, and a resumed run that reads the clips back instead of decoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "librivox"


def _segment(start, end, text, temperature=0.0):
    from asr_app.transcribe import Segment

    return Segment(start, end, text, temperature=temperature)


def test_segments_group_into_clips_without_fallbacks_and_under_the_limit():
    from asr_app.adapt.unlabeled import group_segments

    segments = [
        _segment(0.0, 5.0, " one"),
        _segment(5.0, 12.0, " two"),
        _segment(12.0, 14.0, " unsure", temperature=0.4),  # a fallback: left out, ends the clip
        _segment(14.0, 30.0, " three"),
        _segment(30.0, 43.0, " four"),  # 14 -> 43 is over 28 s: a new clip
        _segment(43.0, 44.0, "  "),  # no text
    ]
    assert group_segments(segments, 28.0) == [(0.0, 12.0, "one two"), (14.0, 30.0, "three"), (30.0, 43.0, "four")]


def test_teacher_transcribes_unlabeled_audio_skips_a_corrupt_file_and_resumes(tiny, tmp_path, monkeypatch):
    import soundfile as sf

    from asr_app.adapt.unlabeled import MAX_CLIP_S, teacher_labelled
    from asr_app.audio import SAMPLE_RATE_HZ, load_audio
    from asr_app.transcribe import Transcriber
    from asr_app.wer import corpus_wer

    rows = [json.loads(line) for line in (ASSETS / "manifest.jsonl").read_text().splitlines()]
    source = tmp_path / "recordings"
    (source / "day1").mkdir(parents=True)
    # one long recording (every bundled clip twice, a second of silence after each): more than one clip
    gap = np.zeros(SAMPLE_RATE_HZ, np.float32)
    joined = np.concatenate([x for r in rows + rows for x in (load_audio(ASSETS / r["audio"]), gap)])
    assert len(joined) / SAMPLE_RATE_HZ > MAX_CLIP_S
    sf.write(str(source / "day1" / "long.flac"), joined, SAMPLE_RATE_HZ)
    (source / "broken.wav").write_bytes(b"RIFF not really audio")
    run = tmp_path / "run"
    errors = []
    utts, summary = teacher_labelled([source], tiny, run, on_error=lambda p, why: errors.append(p.name))

    assert errors == ["broken.wav"]
    assert summary["files"] == 2 and summary["failed"] == 1
    assert len(utts) >= 2 and summary["clips"] == len(utts)
    for u in utts:
        assert u.audio.is_file() and 0 < u.duration_s <= MAX_CLIP_S and u.text
        assert abs(len(load_audio(u.audio)) / SAMPLE_RATE_HZ - u.duration_s) < 0.01
    # the clips hold what was said: the teacher's text against the bundled transcripts
    heard = " ".join(u.text for u in utts)
    assert corpus_wer([" ".join(r["text"] for r in rows + rows)], [heard]).wer < 0.15

    # a resumed run reads the clips and texts back; nothing is decoded again
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again on resume")

    monkeypatch.setattr(Transcriber, "transcribe_audio", no_decoding)
    again, summary_again = teacher_labelled([source], tiny, run, on_error=lambda p, why: None)
    assert [(u.audio, u.text) for u in again] == [(u.audio, u.text) for u in utts]
    assert summary_again["clips"] == summary["clips"]
    # an interruption that cut the manifest's last line off: the run still resumes
    manifest = run / "unlabeled" / "manifest.jsonl"
    manifest.write_text(manifest.read_text() + '{"source": "cut off', encoding="utf-8")
    assert len(teacher_labelled([source], tiny, run, on_error=lambda p, why: None)[0]) == len(utts)


def test_unlabeled_paths_that_do_not_exist_or_hold_no_audio_are_named(tmp_path):
    from asr_app.adapt.unlabeled import find_audio

    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        find_audio([tmp_path / "missing"])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no audio files"):
        find_audio([tmp_path / "notes"])


def test_unlabeled_files_are_found_once_and_a_profiles_takes_never(tmp_path):
    import soundfile as sf

    from asr_app.adapt.unlabeled import find_audio

    (tmp_path / "rec" / "takes").mkdir(parents=True)
    for name in ("a.flac", "takes/held.flac"):
        sf.write(str(tmp_path / "rec" / name), np.zeros(1600, np.float32), 16000)
    a, held = (tmp_path / "rec" / "a.flac").resolve(), (tmp_path / "rec" / "takes" / "held.flac").resolve()
    assert find_audio([tmp_path / "rec", tmp_path / "rec" / "a.flac"]) == [a, held]  # named twice: once
    assert find_audio([tmp_path / "rec"], exclude=[tmp_path / "rec" / "takes" / "held.flac"]) == [a]
