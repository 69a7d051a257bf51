"""The `asr-app` commands as a user runs them: batch with bad files, resume, eval, bench, errors."""

import json

import numpy as np
import pytest
import soundfile as sf

from asr_app.cli import main
from asr_app.wer import normalize
from tests.conftest import ASSETS, JFK, TEST_CLEAN, require_data


@pytest.fixture
def mixed_folder(tmp_path):
    """Good files (two formats, one at 44.1 kHz stereo), corrupt, empty, truncated and silent ones."""
    require_data(JFK)
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    audio, sr = sf.read(JFK, dtype="float32")
    sf.write(d / "jfk.flac", audio, sr)
    import librosa

    stereo = librosa.resample(audio, orig_sr=16_000, target_sr=44_100)
    sf.write(d / "sub" / "jfk_stereo.wav", np.stack([stereo, stereo], 1), 44_100)
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" * 100)
    (d / "empty.mp3").write_bytes(b"")
    sf.write(tmp_path / "whole.wav", audio, sr)
    raw = (tmp_path / "whole.wav").read_bytes()
    (d / "truncated.wav").write_bytes(raw[: len(raw) // 2])
    sf.write(d / "silent.wav", np.zeros(30 * 16_000, np.float32), 16_000)
    (d / "notes.txt").write_text("not audio, and not picked up from a folder")
    return d


def test_batch_reports_bad_files_goes_on_and_resumes(tiny, mixed_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["transcribe", str(mixed_folder), "--output-dir", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    for bad, reason in [("corrupt.wav", "not a readable audio file"), ("empty.mp3", "empty file"),
                        ("truncated.wav", "truncated")]:
        lines = [l for l in captured.err.splitlines() if bad in l and "error" in l]
        assert lines and reason in lines[0], (bad, captured.err)
        assert not (out / bad.rsplit(".", 1)[0]).with_suffix(".txt").exists()
    assert "Traceback" not in captured.err
    assert "3 file(s) failed" in captured.err
    for stem in ("jfk", "sub/jfk_stereo"):
        text = (out / f"{stem}.txt").read_text()
        assert "ask what you can do for your country" in normalize(text)
        data = json.loads((out / f"{stem}.json").read_text())
        assert data["model"] == "tiny.en" and data["duration_s"] == pytest.approx(11.0, abs=0.01)
        assert data["rtf"] > 0 and data["segments"][0]["end_s"] > data["segments"][0]["start_s"]
        srt = (out / f"{stem}.srt").read_text()
        assert srt.startswith("1\n00:00:0") and " --> " in srt
        assert (out / f"{stem}.vtt").read_text().startswith("WEBVTT\n\n00:00:0")
        assert (out / f"{stem}.tsv").read_text().startswith("start\tend\ttext\n")
    assert (out / "silent.txt").read_text() == ""
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries

    # resume: finished files are skipped, the failed ones are tried again
    (out / "jfk.txt").write_text("kept")
    code = main(["transcribe", str(mixed_folder), "--output-dir", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "skipped 3 file(s)" in err
    assert (out / "jfk.txt").read_text() == "kept"
    code = main(["transcribe", str(mixed_folder / "jfk.flac"), "--output-dir", str(out), "--overwrite",
                 "--format", "txt", "--quiet"])
    assert code == 0 and "country" in (out / "jfk.txt").read_text()


def test_transcribe_prints_the_assets(tiny, tmp_path, capsys):
    code = main(["transcribe", str(ASSETS), "--output-dir", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert code == 0
    assert "he might even have been made amiable himself" in normalize(out)


def test_user_errors_are_one_line_without_traceback(tiny, tmp_path, capsys):
    assert main(["transcribe", str(tmp_path / "nope.wav")]) == 1
    assert "no such file" in capsys.readouterr().err
    require_data(JFK)
    assert main(["transcribe", str(JFK), "--language", "fr", "--output-dir", str(tmp_path)]) == 1
    assert "English-only" in capsys.readouterr().err
    assert main(["transcribe", str(JFK), "--model", "no-such-model"]) == 1
    assert "unknown model" in capsys.readouterr().err
    assert main(["transcribe", str(JFK), "--beam-size", "0", "--output-dir", str(tmp_path)]) == 2
    assert "beam_size" in capsys.readouterr().err
    assert main(["eval", str(tmp_path)]) == 1
    assert "not a dataset" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_on_real_speech_reports_wer_and_json(tiny, tmp_path, capsys):
    require_data(TEST_CLEAN)
    report = tmp_path / "r.json"
    assert main(["eval", str(TEST_CLEAN), "--report", str(report), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "WER" in out and "RTF" in out
    data = json.loads(report.read_text())
    assert len(data["utterances"]) == 4
    from asr_app.datasets import load_dataset

    assert data["total"]["reference_words"] == sum(len(normalize(u.text).split()) for u in load_dataset(TEST_CLEAN))
    # faster-whisper int8 on these 4 utterances: 6.9 %; a broken decoder is far above this
    assert data["total"]["wer"] < 12.0
    row = data["utterances"][0]
    assert {"reference", "hypothesis", "reference_normalized", "substitutions"} <= set(row)


@pytest.mark.slow
def test_bench_measures_both_engines(tiny, tmp_path, capsys):
    pytest.importorskip("faster_whisper")
    require_data(JFK)
    report = tmp_path / "b.json"
    assert main(["bench", str(JFK), "--report", str(report), "--threads", "1"]) == 0
    data = json.loads(report.read_text())
    engines = {e["engine"]: e for e in data["engines"]}
    assert set(engines) == {"asr-app/onnx-int8", "faster-whisper:float32"}  # onnx int8 is the default backend
    for e in engines.values():
        assert e["error"] is None and e["rtf"] > 0 and e["peak_rss_mb"] > 50 and e["load_s"] > 0
    assert "RTF ratio" in capsys.readouterr().out
