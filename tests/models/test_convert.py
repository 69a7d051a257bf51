"""Conversion of the CTranslate2 tiny.en to Hugging Face Whisper, and the facts it must handle."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from asr_app.audio import load_audio, log_mel_window
from asr_app.decoding import DecodingOptions, WindowDecoder
from asr_app.errors import ModelError
from asr_app.models import find_model, load_model
from asr_app.models.resolver import converted_dir
from tests.conftest import JFK, TEST_CLEAN, require_data

JFK_TEXT = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"


def _words(text: str) -> str:
    from asr_app.wer import normalize

    return normalize(text)


def test_fact_a_english_only_generation_config_has_no_language_maps(tiny):
    gc = tiny.model.generation_config
    assert not hasattr(gc, "lang_to_id") or gc.lang_to_id is None
    assert not hasattr(gc, "task_to_id") or gc.task_to_id is None
    # and plain generate() therefore transcribes instead of forcing a language token
    require_data(JFK)
    mel = tiny.feature_extractor(load_audio(JFK), sampling_rate=16000, return_tensors="pt").input_features
    out = tiny.model.generate(mel)
    assert _words(tiny.tokenizer.decode(out[0], skip_special_tokens=True)) == JFK_TEXT


def test_fact_b_special_tokens_registered_so_timestamps_do_not_shift(tiny):
    tok, sp = tiny.tokenizer, tiny.special
    assert tok.all_special_ids[-1] + 1 == sp.timestamp_begin  # what the tokenizer uses for offsets
    ids = (
        [sp.sot, sp.timestamp_begin + 50] + tok.encode(" hello", add_special_tokens=False) + [sp.timestamp_begin + 100]
    )
    offsets = tok.decode(ids, output_offsets=True)["offsets"]
    assert offsets[0]["timestamp"] == (1.0, 2.0)


def test_fact_c_timestamp_tokens_added(tiny):
    tok, sp = tiny.tokenizer, tiny.special
    assert len(tok) == tiny.model.config.vocab_size == 51864
    assert tok.convert_ids_to_tokens(sp.timestamp_begin) == "<|0.00|>"
    assert tok.convert_ids_to_tokens(sp.timestamp_begin + 1500) == "<|30.00|>"


def test_fact_d_language_tokens_from_tokenizer_not_config(tiny):
    assert tiny.special.languages["en"] == 50258
    assert tiny.tokenizer.convert_ids_to_tokens(50258) == "<|en|>"
    source = find_model("tiny.en")
    ct2_config = json.loads((source.model_files[0].parent / "config.json").read_text())
    assert ct2_config["lang_ids"][0] == 50259  # the shipped file starts at <|zh|>


def test_weights_layout_fused_qkv_and_tied_projection(tiny):
    from asr_app.models.ct2 import read_ct2_model

    ct2 = read_ct2_model(find_model("tiny.en").model_files)
    d = tiny.model.config.d_model
    fused = ct2.get("encoder/layer_1/self_attention/linear_0/weight")
    attn = tiny.model.model.encoder.layers[1].self_attn
    np.testing.assert_array_equal(attn.q_proj.weight.detach().numpy(), fused[:d])
    np.testing.assert_array_equal(attn.k_proj.weight.detach().numpy(), fused[d : 2 * d])
    np.testing.assert_array_equal(attn.v_proj.weight.detach().numpy(), fused[2 * d :])
    assert attn.k_proj.bias is None
    assert not ct2.get("encoder/layer_1/self_attention/linear_0/bias")[d : 2 * d].any()
    assert tiny.model.proj_out.weight.data_ptr() == tiny.model.model.decoder.embed_tokens.weight.data_ptr()


def test_conversion_is_cached(tiny, cache_root):
    entries = [p for p in (cache_root / "converted").iterdir() if p.name.startswith("tiny.en-")]
    assert len(entries) == 1 and (entries[0] / "model.safetensors").is_file()
    assert converted_dir(find_model("tiny.en")) == entries[0]  # second call: no new conversion


@pytest.mark.slow
def test_greedy_tokens_equal_ctranslate2_on_real_speech(tiny):
    """Parity: same log-mel input, our greedy decoder vs CTranslate2's, token for token."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    require_data(JFK, TEST_CLEAN)
    ct = ctranslate2.models.Whisper(str(find_model("tiny.en").location), device="cpu", compute_type="float32")
    ours = WindowDecoder(tiny, DecodingOptions(temperatures=(0.0,)))
    files = [JFK] + sorted(TEST_CLEAN.rglob("*.flac"))
    assert len(files) >= 5
    for f in files:
        mel = log_mel_window(tiny.feature_extractor, load_audio(f))
        ref = ct.generate(
            ctranslate2.StorageView.from_array(mel[None]),
            [[tiny.special.sot]],
            beam_size=1,
            suppress_blank=True,
            suppress_tokens=[-1],
            max_initial_timestamp_index=50,
        )
        assert ours.decode(mel).tokens == ref[0].sequences_ids[0], f.name


def test_corrupt_model_bin_fails_clearly_and_leaves_no_cache(tmp_path, monkeypatch):
    src = find_model("tiny.en")
    bad = tmp_path / "bad-model"
    bad.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(src.model_files[0].parent / name, bad / name)
    raw = src.model_files[0].read_bytes()
    (bad / "model.bin").write_bytes(raw[: len(raw) // 3])
    cache = tmp_path / "cache"
    monkeypatch.setenv("ASR_APP_CACHE_DIR", str(cache))
    with pytest.raises(ModelError, match="truncated"):
        load_model(str(bad))
    assert not any((cache / "converted").iterdir())


def test_local_hugging_face_folder_loads_with_from_pretrained(tiny, tmp_path):
    """The path an online user takes (from_pretrained), exercised on a local folder."""
    folder = tmp_path / "hf-tiny"
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    tiny.feature_extractor.save_pretrained(folder)
    assert find_model(str(folder)).kind == "hf"
    b = load_model(str(folder))
    assert b.special.timestamp_begin == tiny.special.timestamp_begin
    x = torch.zeros(1, 80, 3000)
    with torch.no_grad():
        a = b.model.model.encoder(x).last_hidden_state
        e = tiny.model.model.encoder(x).last_hidden_state
    torch.testing.assert_close(a, e)


def test_hub_id_offline_is_a_clear_model_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert find_model("openai/whisper-tiny.en").kind == "hf"
    with pytest.raises(ModelError, match="cannot load model"):
        load_model("nobody-here/no-such-whisper")


def test_hub_id_without_network_fails_within_seconds(tmp_path):
    """No network (the hub's port closed): one clear line at once, not after a minute of retries."""
    import subprocess
    import sys
    import time

    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path / "hub")}
    env.pop("HF_HUB_OFFLINE", None)
    require_data(JFK)
    t0 = time.monotonic()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "asr_app",
            "transcribe",
            "--model",
            "openai/whisper-tiny.en",
            str(JFK),
            "--output-dir",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert time.monotonic() - t0 < 10
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "cannot be reached (no network?)" in out.stderr and "built-in model" in out.stderr


@pytest.mark.slow
def test_hub_download_path_against_a_local_hub(tiny, tmp_path, monkeypatch):
    """A user online: `--model someone/whisper` downloads through huggingface_hub (here from a
    local stand-in of the hub API), exports, transcribes; the second run uses the hub cache."""
    import subprocess
    import sys

    from tests.fake_hub import serve_model

    folder = tmp_path / "repo"
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    tiny.feature_extractor.save_pretrained(folder)
    tiny.model.generation_config.save_pretrained(folder)
    server, requests = serve_model(folder, "someone/whisper-tiny-en")
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_HUB_CACHE": str(tmp_path / "hub")}
    env.pop("HF_HUB_OFFLINE", None)
    require_data(JFK)
    try:
        for run in range(2):
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "asr_app",
                    "transcribe",
                    "--model",
                    "someone/whisper-tiny-en",
                    str(JFK),
                    "--output-dir",
                    str(tmp_path / f"o{run}"),
                    "--quiet",
                ],
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
            )
            assert out.returncode == 0, out.stderr[-2000:]
            assert _words((tmp_path / f"o{run}" / "jfk.txt").read_text()) == JFK_TEXT
            if run == 0:
                assert any("/resolve/" in r and r.endswith("model.safetensors") for r in requests)
                served = len(requests)
        assert len(requests) == served  # the second run came from the hub cache alone
    finally:
        server.shutdown()


def test_unknown_names_and_bad_folders(tmp_path):
    with pytest.raises(ModelError, match="unknown model"):
        find_model("tiny-does-not-exist")
    with pytest.raises(ModelError, match="neither"):
        find_model(str(tmp_path))


@pytest.mark.slow
def test_int8_ctranslate2_model_converts_and_transcribes(tiny, tmp_path, monkeypatch):
    """An int8 model.bin (weights with `_scale`) written by CTranslate2's own converter."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    hf = tmp_path / "hf"
    tiny.model.save_pretrained(hf)
    tiny.tokenizer.save_pretrained(hf)
    tiny.feature_extractor.save_pretrained(hf)
    out = tmp_path / "ct2-int8"
    try:
        ctranslate2.converters.TransformersConverter(str(hf)).convert(str(out), quantization="int8")
    except Exception as e:  # the converter tracks transformers releases loosely
        pytest.skip(f"ctranslate2's converter cannot read this transformers checkpoint: {e}")
    for name in ("tokenizer.json", "config.json"):
        if not (out / name).exists():
            shutil.copy(find_model("tiny.en").model_files[0].parent / name, out / name)
    from asr_app.models.ct2 import read_ct2_model

    assert b"weight_scale" in (out / "model.bin").read_bytes()  # really int8 with per-row scales
    ct2 = read_ct2_model(out / "model.bin")
    assert ct2.binary_version in (5, 6)
    monkeypatch.setenv("ASR_APP_CACHE_DIR", str(tmp_path / "cache"))
    b = load_model(str(out))
    from asr_app.transcribe import TranscribeOptions, Transcriber

    require_data(JFK)
    text = Transcriber(TranscribeOptions(), bundle=b).transcribe_file(JFK).text
    assert _words(text) == JFK_TEXT
