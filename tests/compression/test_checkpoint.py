"""The saved format: method blocks in order, and folders written before method lists existed."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import JFK, LJSPEECH, require_data

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "adaptwin_v1_tokens.json"


def _old_main_model(tiny, folder: Path) -> Path:
    """tiny.en with 45% of the encoder removed as the single-method code built it (data-aware
    ranks and whitening from 24 LJ001 takes, no recovery), saved in that code's layout:
    the AdaPTwin fields at the top of the compression block, no "methods" list."""
    from asr_app.adapt import pack_windows
    from asr_app.compression.adaptwin.allocate import allocate_ranks
    from asr_app.compression.adaptwin.apply import compress_encoder
    from asr_app.compression.adaptwin.method import ADAPTWIN
    from asr_app.compression.calibrate import collect_activation_stats, measure_sensitivity
    from asr_app.compression.checkpoint import save_compressed
    from asr_app.datasets import load_dataset

    windows = pack_windows(load_dataset(LJSPEECH, "LJ001-*", 24), tiny)
    mels = [torch.from_numpy(w.mel[None]) for w in windows]
    stats = collect_activation_stats(tiny.model, mels)
    gains = measure_sensitivity(tiny.model, torch.cat(mels[:2]), seed=0)
    model = copy.deepcopy(tiny.model)
    plan = allocate_ranks(model, 0.55, stats, gains, attention=True, ffn=True)
    compress_encoder(model, plan, stats)
    save_compressed(model, folder, [ADAPTWIN.block(plan)], {"base_model": "tiny.en", "language": "en"})
    tiny.tokenizer.save_pretrained(str(folder))
    tiny.feature_extractor.save_pretrained(str(folder))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["compression"] = {
        "method": "adaptwin",
        "version": 1,
        "plan": plan.to_dict(),
        "base_model": "tiny.en",
        "language": "en",
        "target_ratio": 0.55,
    }
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    return folder


@pytest.mark.slow
def test_a_model_saved_in_the_single_method_layout_loads_and_decodes_as_before(tiny, tmp_path):
    """The fixture holds what the code before the method pipeline (commit 9bb95dd) decoded
    from this model: JFK and 20 LJ002 clips, greedy, on torch, onnx int8 and onnx float, and a
    sample of its float ONNX encoder's output on JFK. The same model saved in that code's
    layout must load and give the same tokens and, within 1e-5, the same encoder output."""
    require_data(LJSPEECH, JFK)
    import onnxruntime as ort

    from asr_app.audio import load_audio, log_mel_window
    from asr_app.compression.checkpoint import method_blocks
    from asr_app.datasets import load_dataset
    from asr_app.decoding import DecodingOptions, WindowDecoder
    from asr_app.models import load_model

    want = json.loads(FIXTURE.read_text())
    folder = _old_main_model(tiny, tmp_path / "model")
    block = json.loads((folder / "config.json").read_text())["compression"]
    assert method_blocks(block)[0]["plan"] == want["plan"]  # the same ranks as before
    paths = {"jfk": JFK, **{u.id: u.audio for u in load_dataset(LJSPEECH, "LJ002-*", 20)}}
    assert list(paths) == want["clips"]
    mels = [log_mel_window(tiny.feature_extractor, load_audio(paths[c])[: 16000 * 30]) for c in want["clips"]]
    for key, kw in (
        ("torch", {}),
        ("onnx-int8", {"backend": "onnx", "quantize": "int8"}),
        ("onnx-none", {"backend": "onnx", "quantize": "none"}),
    ):
        bundle = load_model(str(folder), **kw)
        assert bundle.backend == kw.get("backend", "torch")
        decoder = WindowDecoder(bundle, DecodingOptions(temperatures=(0.0,)))
        got = [decoder.decode(mel).tokens for mel in mels]
        assert got == want["tokens"][key], key
    session = ort.InferenceSession(str(folder / "onnx-none" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    y = session.run(None, {want["encoder_input"]: mels[0][None].astype(np.float32)})[0]
    assert list(y.shape) == want["encoder_shape"]
    np.testing.assert_allclose(y.reshape(-1)[::997], want["encoder_sample"], atol=1e-5, rtol=0)


def test_method_blocks_read_both_layouts_and_refuse_an_unknown_method(tmp_path):
    from asr_app.compression.checkpoint import load_compressed, method_blocks

    old = {"method": "adaptwin", "version": 1, "plan": {"layers": {}}, "base_model": "tiny.en"}
    assert method_blocks(old) == [{"method": "adaptwin", "version": 1, "plan": {"layers": {}}}]
    new = {"methods": [{"method": "adaptwin", "version": 1, "plan": {}}, {"method": "fvt", "version": 1}]}
    assert [b["method"] for b in method_blocks(new)] == ["adaptwin", "fvt"]
    with pytest.raises(ValueError, match="names no method"):
        method_blocks({"base_model": "tiny.en"})
    (tmp_path / "config.json").write_text(json.dumps({"compression": {"methods": [{"method": "nope", "version": 1}]}}))
    with pytest.raises(ValueError, match="unknown compression method 'nope'"):
        load_compressed(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"compression": {"method": "adaptwin", "version": 9}}))
    with pytest.raises(ValueError, match="adaptwin v9 is not adaptwin v1"):
        load_compressed(tmp_path)
