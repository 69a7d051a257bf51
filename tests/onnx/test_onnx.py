"""ONNX export and the onnxruntime backend: own ops against their PyTorch references,
whole models against torch greedy decoding, int8 WER, no torch at inference, the CLI."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import JFK, LJSPEECH, TEST_CLEAN, TEST_THREADS, TRAIN_CLEAN_5, require_data


def _run_op(op_type: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """One own-domain node in a model of its own, run by stock onnxruntime."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from asr_app.kernels import DOMAIN
    from asr_app.onnx import make_model

    names = list(inputs)
    node = helper.make_node(op_type, names, ["y"], domain=DOMAIN)
    types = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int8): TensorProto.INT8}
    rank = len(next(iter(inputs.values())).shape)  # every op's output has its first input's rank
    graph = helper.make_graph(
        [node],
        "one_op",
        [helper.make_tensor_value_info(n, types[v.dtype], list(v.shape)) for n, v in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"d{i}" for i in range(rank)])],
    )
    sess = ort.InferenceSession(make_model(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)[0]


def _rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_quantize_columns_is_symmetric_per_output_column():
    from asr_app.onnx import quantize_columns

    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 10)).astype(np.float32) * np.arange(1, 11, dtype=np.float32)  # columns differ in scale
    w[:, 3] = 0  # a padded column
    q, s = quantize_columns(w)
    assert q.dtype == np.int8 and s.shape == (10,) and np.abs(q).max() == 127
    assert np.all(np.abs(q * s - w) <= s / 2 + 1e-7)  # rounding error at most half a step per column
    assert np.all(q[:, 3] == 0) and s[3] == 1.0


def test_low_rank_linear_ops_match_the_module():
    from asr_app.compression.adaptwin.layer import LowRankLinear
    from asr_app.onnx import quantize_columns

    torch.manual_seed(0)
    m = LowRankLinear(96, 200, 24)
    with torch.no_grad():
        m.up.bias.normal_()
    x = torch.randn(2, 7, 96)
    want = m(x).detach().numpy()
    down, up, bias = (
        m.down.weight.detach().numpy().T.copy(),
        m.up.weight.detach().numpy().T.copy(),
        m.up.bias.detach().numpy(),
    )
    got = _run_op("LowRankLinear", {"X": x.numpy(), "Down": down, "Up": up, "Bias": bias})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    (dq, ds), (uq, us) = quantize_columns(down), quantize_columns(up)
    got8 = _run_op(
        "LowRankLinearInt8", {"X": x.numpy(), "Down": dq, "DownScale": ds, "Up": uq, "UpScale": us, "Bias": bias}
    )
    assert _rel(got8, want) < 0.03


def test_int8_matmul_op_is_close_to_float():
    from asr_app.onnx import quantize_columns

    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 64)).astype(np.float32)
    w = rng.standard_normal((64, 48)).astype(np.float32)
    q, s = quantize_columns(w)
    got = _run_op("Int8MatMul", {"X": x, "W": q, "Scale": s})
    assert got.shape == (3, 5, 48)
    assert _rel(got, x @ w) < 0.02


def test_block_attention_op_matches_softmax_attention():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 50, 16), torch.randn(2, 3, 70, 16), torch.randn(2, 3, 70, 8)
    want = torch.softmax(q @ k.transpose(-1, -2), -1) @ v
    got = _run_op("BlockAttention", {"Q": q.numpy(), "K": k.numpy(), "V": v.numpy()})
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


def test_twin_attention_ops_match_the_module_with_unequal_ranks(tiny):
    from asr_app.compression.adaptwin.layer import TwinSelfAttention
    from asr_app.compression.adaptwin.onnx import twin_weights
    from asr_app.onnx import quantize_columns

    attn = tiny.model.model.encoder.layers[1].self_attn
    twin = TwinSelfAttention.from_attention(attn, [64, 40, 12, 64, 3, 30], [5, 64, 33, 20, 64, 1]).eval()
    x = torch.randn(2, 50, 384)
    with torch.no_grad():
        want = twin(x)[0].numpy()
    wq, wk, bq, wv, wo = twin_weights(twin)
    bo = twin.out_proj.bias.detach().numpy()
    got = _run_op("TwinAttention", {"X": x.numpy(), "Wq": wq, "Bq": bq, "Wk": wk, "Wv": wv, "Wo": wo, "Bo": bo})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    (q8, sq), (k8, sk), (v8, sv), (o8, so) = (quantize_columns(w) for w in (wq, wk, wv, wo))
    got8 = _run_op(
        "TwinAttentionInt8",
        {
            "X": x.numpy(),
            "Wq": q8,
            "Sq": sq,
            "Bq": bq,
            "Wk": k8,
            "Sk": sk,
            "Wv": v8,
            "Sv": sv,
            "Wo": o8,
            "So": so,
            "Bo": bo,
        },
    )
    assert _rel(got8, want) < 0.05


def _greedy(bundle, mel, beam_size=1):
    from asr_app.decoding import DecodingOptions, WindowDecoder

    return WindowDecoder(bundle, DecodingOptions(temperatures=(0.0,), beam_size=beam_size)).decode(mel).tokens


def _mels(bundle, paths):
    from asr_app.audio import load_audio, log_mel_window

    return [log_mel_window(bundle.feature_extractor, load_audio(p)[: 16000 * 30]) for p in paths]


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    """tiny.en exported unquantized and int8."""
    from asr_app.onnx import export_model, load_onnx_model

    root = tmp_path_factory.mktemp("onnx")
    return {q: load_onnx_model(export_model(tiny, root / q, q), threads=TEST_THREADS) for q in ("none", "int8")}


def test_export_folder_has_graphs_tokenizer_and_config(exported):
    import onnx

    from asr_app.kernels import DOMAIN

    folder = Path(exported["int8"].path)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["format"] == "asr-app-onnx" and cfg["quantize"] == "int8" and cfg["custom_domains"] == {DOMAIN: 1}
    dec = onnx.load(str(folder / "decoder.onnx"))
    assert [i.name for i in dec.graph.input] == ["tokens", "self_k", "self_v", "cross_k", "cross_v"]
    assert {n.op_type for n in dec.graph.node if n.domain == DOMAIN} == {"Int8MatMul"}
    assert {f.name for f in dec.functions} == {"Int8MatMul"}  # bodies ship in the file
    for name in ("tokenizer.json", "mel_filters.npy", "generation_config.json", "preprocessor_config.json"):
        assert (folder / name).is_file()


def test_numpy_log_mel_matches_the_feature_extractor(tiny, exported):
    from asr_app.audio import load_audio, log_mel_window

    audio = load_audio(JFK)
    want = log_mel_window(tiny.feature_extractor, audio)
    got = log_mel_window(exported["none"].feature_extractor, audio)
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_onnx_decodes_the_same_tokens_as_torch(tiny, exported):
    """Unquantized: greedy tokens identical to the torch backend on real speech; beam search too."""
    require_data(TEST_CLEAN)
    from asr_app.datasets import load_dataset

    utts = load_dataset(TEST_CLEAN, limit=6)
    mels = _mels(tiny, [u.audio for u in utts]) + _mels(tiny, [JFK])
    for mel in mels:
        assert _greedy(exported["none"], mel) == _greedy(tiny, mel)
    assert _greedy(exported["none"], mels[-1], beam_size=3) == _greedy(tiny, mels[-1], beam_size=3)


@pytest.mark.slow
def test_int8_wer_within_half_a_point_of_torch(tiny, exported):
    """int8 weights per channel: corpus WER at most 0.5 points above float32 torch on 60
    LibriSpeech utterances (about 2,000 words, so 0.5 points is about 10 words)."""
    require_data(TRAIN_CLEAN_5)
    from asr_app.datasets import load_dataset
    from asr_app.transcribe import TranscribeOptions, Transcriber
    from asr_app.wer import corpus_wer

    utts = load_dataset(TRAIN_CLEAN_5, limit=60)
    refs = [u.text for u in utts]
    wers = {}
    for name, bundle in (("torch", tiny), ("int8", exported["int8"])):
        tr = Transcriber(TranscribeOptions(vad=False), bundle=bundle)
        wers[name] = 100 * corpus_wer(refs, [tr.transcribe_file(u.audio).text for u in utts]).wer
    assert wers["int8"] <= wers["torch"] + 0.5, wers


def test_compressed_model_exports_as_own_ops_and_decodes_like_torch(tiny, tmp_path):
    """An adapted model with unequal per-head ranks, a factored decoder feed-forward and
    rank-56 decoder attention: exported into its own folder on first use, TwinAttention and
    LowRankLinear nodes, a 56-wide KV cache, the same greedy tokens as torch."""
    import onnx

    from asr_app.compression.adaptwin.apply import compress_decoder_attention, compress_decoder_ffn, compress_encoder
    from asr_app.compression.adaptwin.config import CompressionPlan, LayerPlan
    from asr_app.compression.adaptwin.method import ADAPTWIN
    from asr_app.compression.checkpoint import save_compressed
    from asr_app.kernels import DOMAIN
    from asr_app.models import load_model, onnx_model_dir

    model = copy.deepcopy(tiny.model)
    qk, vo = [64, 60, 56, 64, 48, 62], [64, 50, 64, 60, 64, 56]
    plan = CompressionPlan(
        {i: LayerPlan(qk, vo, 320, 320) for i in range(4)},
        False,
        "joint",
        decoder={i: LayerPlan(fc1=320, fc2=300) for i in range(4)},
        decoder_attention=56,
    )
    compress_encoder(model, plan)
    compress_decoder_ffn(model, plan)
    compress_decoder_attention(model, plan)
    folder = save_compressed(model, tmp_path / "m", [ADAPTWIN.block(plan)], {"base_model": "tiny.en", "language": "en"})
    tiny.tokenizer.save_pretrained(str(folder))
    tiny.feature_extractor.save_pretrained(str(folder))
    torch_bundle = load_model(str(folder))
    onnx_bundle = load_model(str(folder), backend="onnx", quantize="none", threads=TEST_THREADS)
    assert torch_bundle.adapted_language == onnx_bundle.adapted_language == "en"  # carried into the export
    assert onnx_bundle.path == str(folder / "onnx-none")
    assert onnx_model_dir(str(folder), "none") == folder / "onnx-none"  # reused, not exported again
    enc = onnx.load(str(folder / "onnx-none" / "encoder.onnx"))
    assert {n.op_type for n in enc.graph.node if n.domain == DOMAIN} == {"TwinAttention", "LowRankLinear"}
    dec = onnx.load(str(folder / "onnx-none" / "decoder.onnx"))
    assert sum(n.op_type == "LowRankLinear" for n in dec.graph.node if n.domain == DOMAIN) == 8  # fc1, fc2 x 4
    assert json.loads((folder / "onnx-none" / "config.json").read_text())["head_dim"] == 56
    assert [d.dim_value for d in dec.graph.input[1].type.tensor_type.shape.dim][-1] == 56  # self_k
    for mel in _mels(tiny, [JFK]):
        want = _greedy(torch_bundle, mel)
        assert len(want) > 10 and _greedy(onnx_bundle, mel) == want


def test_onnx_backend_runs_without_torch(exported, tmp_path):
    """`transcribe` (VAD on, an export folder and the default model), `transcribe --live` and
    `--no-vad` with torch and transformers made unimportable."""
    from asr_app.models import onnx_model_dir

    onnx_model_dir("tiny.en", "int8")  # the default model's export, as after its first use
    runs = [
        ["--model", str(exported["int8"].path), "--no-vad"],
        ["--model", str(exported["int8"].path)],
        [],
        ["--live", "--no-tui", "--speed", "0", "--save-dir", str(tmp_path / "live"), "--input"],
    ]
    for i, extra in enumerate(runs):
        code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers'):
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
from asr_app.cli import main
rc = main(['transcribe', *{extra!r}, {str(JFK)!r}, '--quiet', '--output-dir', {str(tmp_path / str(i))!r}])
assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')]
sys.exit(rc)
"""
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, (extra, out.stderr[-2000:])
        text = (tmp_path / "live" / "transcript.txt") if "--live" in extra else (tmp_path / str(i) / "jfk.txt")
        assert "ask not what your country can do for you" in text.read_text().lower().replace(",", ""), extra


def test_bad_export_folders_give_clear_errors(exported, tmp_path):
    import shutil

    from asr_app.errors import ModelError
    from asr_app.onnx import load_onnx_model

    with pytest.raises(ModelError, match="asr-app export"):
        load_onnx_model(tmp_path)
    newer = tmp_path / "newer"
    shutil.copytree(exported["int8"].path, newer)
    cfg = json.loads((newer / "config.json").read_text())
    (newer / "config.json").write_text(json.dumps({**cfg, "format_version": 99}))
    with pytest.raises(ModelError, match="newer"):
        load_onnx_model(newer)
    (newer / "config.json").write_text(json.dumps(cfg))
    (newer / "decoder.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="export it again"):
        load_onnx_model(newer)


def test_cli_export_then_transcribe_with_the_folder(cache_root, tmp_path):
    from asr_app.cli import main

    out = tmp_path / "tiny-int8"
    assert main(["export", "--model", "tiny.en", "--quantize", "int8", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["quantize"] == "int8"
    assert (
        main(["transcribe", "--model", str(out), "--no-vad", "--quiet", str(JFK), "--output-dir", str(tmp_path)]) == 0
    )
    assert "your country" in (tmp_path / "jfk.txt").read_text().lower()
    with pytest.raises(SystemExit):  # argparse rejects an unknown quantization
        main(["export", "--model", "tiny.en", "--quantize", "int4"])


def test_fp16_export_decodes_like_torch_on_cpu(tiny, tmp_path):
    """float16 weights and compute (the GPU format) still decode JFK as float32 torch does."""
    from asr_app.onnx import export_model, load_onnx_model

    bundle = load_onnx_model(export_model(tiny, tmp_path / "fp16", "fp16"), threads=TEST_THREADS)
    mel = _mels(tiny, [JFK])[0]
    assert _greedy(bundle, mel) == _greedy(tiny, mel)


@pytest.mark.gpu
def test_fp16_on_cuda_decodes_like_torch(tiny, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (CPU build or no GPU)")
    from asr_app.errors import ModelError
    from asr_app.onnx import export_model, load_onnx_model

    try:
        bundle = load_onnx_model(export_model(tiny, tmp_path / "fp16", "fp16"), device="cuda")
    except ModelError as e:  # the GPU build without CUDA libraries or a GPU
        pytest.skip(str(e))
    mel = _mels(tiny, [JFK])[0]
    assert _greedy(bundle, mel) == _greedy(tiny, mel)


def test_live_streaming_runs_on_the_onnx_backend(exported):
    """The streaming transcriber behind --live on an int8 export: every phrase committed,
    accuracy kept (same check as the torch streaming test)."""
    require_data(LJSPEECH)
    from asr_app.audio import load_audio
    from asr_app.datasets import load_dataset
    from asr_app.streaming import StreamingTranscriber
    from asr_app.streaming_bench import concatenate_clips, replay
    from asr_app.wer import corpus_wer

    utts = load_dataset(LJSPEECH, "LJ002-000[1-4]")
    audio, ends = concatenate_clips([load_audio(u.audio) for u in utts])
    report = replay(StreamingTranscriber(exported["int8"]), audio, ends)
    assert report.summary()["phrases"] == len(utts)
    assert corpus_wer([" ".join(u.text for u in utts)], [report.text]).wer < 0.10, report.text


def test_export_never_replaces_a_folder_that_is_not_an_export(tiny, tmp_path):
    from asr_app.onnx import ExportError, export_model

    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an ONNX export"):
        export_model(tiny, mine, "int8", overwrite=True)
    assert (mine / "todo.txt").read_text() == "keep me"
    with pytest.raises(ExportError, match="quantize"):
        export_model(tiny, tmp_path / "x", "int4")
