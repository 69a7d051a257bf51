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
    for bad, reason in [
        ("corrupt.wav", "not a readable audio file"),
        ("empty.mp3", "empty file"),
        ("truncated.wav", "truncated"),
    ]:
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
    code = main(
        [
            "transcribe",
            str(mixed_folder / "jfk.flac"),
            "--output-dir",
            str(out),
            "--overwrite",
            "--format",
            "txt",
            "--quiet",
        ]
    )
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


# -- what a new user hits ----------------------------------------------------------------------
def test_progress_bar_survives_durations_that_add_up_past_the_total(capsys):
    """12 clips of 1.05 s: tenths summed to 12.6 against 12.6 (tqdm blanked the total and the
    bar's close raised TypeError); a file longer than its header must not break it either."""
    import io

    from asr_app.cli.transcribe import _TqdmProgress

    out = io.StringIO()
    bar = _TqdmProgress(enabled=True, file=out)
    bar.start(12, 12 * 1.05)
    for _ in range(11):
        bar.file_done(None, None, 1.05, None)
    bar.file_done(None, None, 1.4, None)  # decoded longer than the header said
    bar.close()
    last = out.getvalue().replace("\r", "\n").strip().splitlines()[-1]
    assert "12.6/12.6 s audio" in last and "files 12/12" in last


def test_a_batch_of_short_clips_ends_with_its_summary(tmp_path, capsys):
    require_data(JFK)
    audio, _ = sf.read(JFK, dtype="float32")
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(12):
        sf.write(folder / f"c{i:02d}.wav", audio[i * 8000 : i * 8000 + 16_800], 16_000)  # 1.05 s each
    code = main(["transcribe", str(folder), "--output-dir", str(tmp_path / "o"), "--format", "txt"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err and "transcribed 12 file(s)" in err


def test_a_folder_without_audio_says_so_and_fails(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no audio here")
    assert main(["transcribe", str(tmp_path), "--output-dir", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "no audio files found" in err and ".flac" in err and ".wav" in err


def test_missing_paths_are_worded_the_same_by_every_command(tmp_path, capsys):
    missing = tmp_path / "missing.wav"
    for argv in (
        ["transcribe", str(missing)],
        ["eval", str(missing)],
        ["bench", str(missing), "--no-command"],
        ["transcribe", "--live", "--no-tui", "--input", str(missing)],
        ["enroll", "--profile-dir", str(tmp_path / "p"), "--input", str(missing), "--no-tui", "--no-asr-check"],
    ):
        assert main(argv) != 0, argv
        assert f"{missing}: no such file or folder" in capsys.readouterr().err, argv


def test_a_bad_option_value_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["transcribe", "x.wav", "--format", "docx"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice: 'docx'" in err[0] and "asr-app transcribe --help" in err[0]


def test_every_option_has_help_and_every_command_an_example(capsys):
    import argparse

    from asr_app.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in commands.items():
        missing = [a.option_strings or a.dest for a in sub._actions if not a.help]
        assert not missing, (name, missing)
        assert f"asr-app {name}" in sub.format_help().split("examples:")[1], name
    export_options = {o for a in commands["export"]._actions for o in a.option_strings}
    assert "--backend" not in export_options and "--model" in export_options
    assert "read" in next(a.help for a in commands["enroll"]._actions if "--input" in a.option_strings)


def test_unknown_language_codes_list_what_the_model_knows(tiny):
    from asr_app.decoding import DecodingOptions, WindowDecoder

    for code in ("xx", "fr"):
        with pytest.raises(ValueError) as e:
            WindowDecoder(tiny, DecodingOptions(language=code))
        msg = str(e.value)
        assert "English-only" in msg and "it knows en" in msg and "fr, " in msg and "--model base" in msg, msg
    assert "no Whisper code" in str(
        pytest.raises(ValueError, WindowDecoder, tiny, DecodingOptions(language="xx")).value
    )


def test_install_hints_name_the_readme_command():
    import re
    from pathlib import Path

    from asr_app.errors import install_hint

    assert install_hint("bench") == 'pip install -e ".[bench]" (in the asr-app source folder)'
    root = Path(__file__).resolve().parents[2]
    sources = [p for d in ("asr_app", "compression", "kernels") for p in (root / d).rglob("*.py")]
    for path in sources:
        text = path.read_text()
        assert "ownvoice-asr[" not in text and not re.search(r"pip install '\.\[", text), path
    assert 'pip install -e ".[bench]"' in (root / "README.md").read_text()


def test_bench_none_skips_faster_whisper(tiny, tmp_path, capsys):
    require_data(JFK)
    report = tmp_path / "b.json"
    assert main(["bench", str(JFK), "--faster-whisper", "none", "--no-command", "--report", str(report)]) == 0
    engines = [e["engine"] for e in json.loads(report.read_text())["engines"]]
    assert engines == ["asr-app/onnx-int8"]


def test_bench_of_one_file_scores_it_against_the_transcript_beside_it(tmp_path, capsys):
    require_data(JFK)
    report = tmp_path / "b.json"
    assert main(["bench", str(JFK), "--faster-whisper", "none", "--no-command", "--report", str(report)]) == 0
    wer = json.loads(report.read_text())["engines"][0]["wer"]
    assert wer is not None and wer < 5  # samples.trans.txt lists jfk


def test_assets_readme_gives_the_clips_real_length():
    import re

    readme = (ASSETS / "README.md").read_text()
    stated = float(re.search(r"([\d.]+) s in\s+all", readme).group(1))
    total = sum(sf.info(p).duration for p in (ASSETS / "librivox").glob("*.wav"))
    assert abs(stated - total) < 0.5, (stated, total)


def test_outputs_get_the_umask_mode(tiny, tmp_path, capsys):
    import os
    import stat

    from asr_app.outputs import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
        os.umask(0o027)
        atomic_write_text(tmp_path / "b.txt", "x")
        assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o640
        (tmp_path / "a.txt").chmod(0o600)  # a replaced file keeps its own mode
        atomic_write_text(tmp_path / "a.txt", "y")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o600
        os.umask(0o022)
        require_data(JFK)
        assert main(["transcribe", str(JFK), "--output-dir", str(tmp_path / "o"), "--quiet"]) == 0
        modes = {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "o").iterdir()}
        assert modes == {0o644}
    finally:
        os.umask(old)


def test_first_use_says_what_it_prepares_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ASR_APP_CACHE_DIR", str(tmp_path / "fresh-cache"))
    require_data(JFK)
    assert main(["transcribe", str(JFK), "--output-dir", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "first use of tiny.en" in err
    for step in ("converting the CTranslate2 weights", "writing encoder.onnx", "5/5 exported"):
        assert step in err, step
    assert main(["transcribe", str(JFK), "--output-dir", str(tmp_path / "o"), "--overwrite"]) == 0
    assert "first use" not in capsys.readouterr().err


def test_digital_silence_without_vad_gives_no_text(tmp_path, capsys):
    sf.write(tmp_path / "silence.wav", np.zeros(60 * 16_000, np.float32), 16_000)
    assert main(["transcribe", str(tmp_path / "silence.wav"), "--no-vad", "--output-dir", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "silence.txt").read_text() == ""
    assert json.loads((tmp_path / "o" / "silence.json").read_text())["segments"] == []


def test_quiet_speech_still_passes_the_silence_check(tiny):
    from asr_app.audio import load_audio, peak_frame_dbfs
    from asr_app.transcribe import TranscribeOptions, Transcriber

    require_data(JFK)
    audio = load_audio(JFK)
    quiet = audio * 10 ** ((-50 - peak_frame_dbfs(audio)) / 20)  # loudest frame at -50 dBFS
    transcriber = Transcriber(TranscribeOptions(vad=False), bundle=tiny)  # the check that works without VAD
    assert "ask not what your country" in normalize(transcriber.transcribe_audio(quiet).text)
