"""Dataset layouts and corpus WER."""

import json
import subprocess
import sys

import pytest

from asr_app.datasets import load_dataset
from asr_app.errors import DatasetError
from asr_app.wer import corpus_wer, normalize, wer_counts
from tests.conftest import JFK, LJSPEECH, TEST_CLEAN, require_data


def test_librispeech_layout():
    require_data(TEST_CLEAN)
    utts = load_dataset(TEST_CLEAN)
    assert len(utts) == 4 and all(u.speaker == "1089" and u.audio.exists() for u in utts)


def test_librispeech_style_transcripts_take_wav_audio_and_name_what_is_missing(tmp_path):
    """`samples/` in ../shared/data is `samples.trans.txt` + `jfk.wav`: a transcript file
    beside audio that is not FLAC must load (it once failed: "jfk.flac listed but missing")."""
    (tmp_path / "talk.trans.txt").write_text("jfk AND SO MY FELLOW AMERICANS\nspare ASK NOT\n")
    (tmp_path / "jfk.wav").write_bytes(b"x")
    (tmp_path / "spare.flac").write_bytes(b"x")
    (tmp_path / "spare.wav").write_bytes(b"x")
    jfk, spare = load_dataset(tmp_path)
    assert (jfk.id, jfk.audio.name, jfk.text, jfk.speaker) == ("jfk", "jfk.wav", "AND SO MY FELLOW AMERICANS", "jfk")
    assert spare.audio.name == "spare.flac"  # LibriSpeech's own format first
    (tmp_path / "jfk.wav").unlink()
    with pytest.raises(DatasetError, match=r"talk.trans.txt: audio for jfk listed but missing .*remove its line"):
        load_dataset(tmp_path)
    if JFK.is_file():
        (u,) = load_dataset(JFK.parent)
        assert u.audio == JFK and u.text.lower().startswith("and so my fellow americans")


def test_ljspeech_layout_uses_normalized_column_and_filters():
    require_data(LJSPEECH)
    lj2 = load_dataset(LJSPEECH, "LJ002-*")
    assert len(lj2) == 199 and all(u.id.startswith("LJ002-") for u in lj2)
    assert len(load_dataset(LJSPEECH, "LJ001-*")) == 186
    assert len(load_dataset(LJSPEECH, "LJ001-*", limit=3)) == 3


def test_manifest_relative_paths_and_errors(tmp_path):
    (tmp_path / "a.flac").write_bytes(b"x")
    m = tmp_path / "manifest.jsonl"
    m.write_text(json.dumps({"audio": "a.flac", "text": "Hi there.", "speaker": "me", "duration_s": 1.5}) + "\n\n")
    (u,) = load_dataset(tmp_path)
    assert u.audio == tmp_path / "a.flac" and u.speaker == "me" and u.duration_s == 1.5
    assert load_dataset(m) == [u]
    m.write_text('{"text": "no audio"}\n')
    with pytest.raises(DatasetError, match="manifest.jsonl:1"):
        load_dataset(m)
    with pytest.raises(DatasetError, match="no utterances match"):
        m.write_text(json.dumps({"audio": "a.flac", "text": "x"}) + "\n")
        load_dataset(m, "zzz*")


def test_wer_is_corpus_level_after_whisper_normalizer():
    assert normalize("Mr. Smith's colour, 25 dollars!") == normalize("mister smith's color twenty five dollars")
    c = corpus_wer(["a b c d", "e f"], ["a x c d", ""])  # 1 sub of 4, 2 del of 2
    assert (c.substitutions, c.deletions, c.insertions, c.reference_words) == (1, 2, 0, 6)
    assert c.wer == pytest.approx(3 / 6)  # not the mean of 0.25 and 1.0
    assert wer_counts("", "hello").insertions == 1


def test_library_layers_do_not_import_the_app_or_ui():
    code = (
        "import sys, asr_app.compression, asr_app.kernels, asr_app.models, asr_app.transcribe;"
        "bad = [m for m in ('textual', 'sounddevice', 'asr_app.cli') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_compression_and_kernels_sources_import_no_app_module():
    """Static check of every import in compression/ and kernels/ (the layering contract)."""
    import ast
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    allowed_app = ("asr_app.kernels", "asr_app.compression", "asr_app.errors")
    forbidden = ("textual", "sounddevice", "argparse")
    for folder in ("compression", "kernels"):
        for py in (repo / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(py.read_text())):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                )
                for name in names:
                    assert not name.startswith(forbidden), f"{py}: imports {name}"
                    if name.startswith("asr_app"):
                        assert name.startswith(allowed_app), f"{py}: imports {name}"


def test_every_package_folder_is_listed_for_installation():
    """A subpackage missing from pyproject's list works in editable mode but not when installed."""
    from pathlib import Path

    import tomllib

    repo = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    roots = {
        "asr_app": repo / "asr_app",
        "asr_app.compression": repo / "compression",
        "asr_app.kernels": repo / "kernels",
    }
    for name, root in roots.items():
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            assert ".".join((name,) + rel) in listed, f"{init.parent} is not in [tool.setuptools] packages"
