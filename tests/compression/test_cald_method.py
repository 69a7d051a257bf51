"""CALD as a method of the adaptation pipeline: options, dynamic chunking, the shared
layer-wise attention KL on hybrid layers, `adapt --methods cald` end to end (resume, save,
reload), and what it composes with."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from asr_app.compression.cald.options import CaldOptions
from tests.compression.test_cald_train import _whisper
from tests.compression.test_fvt import _speech_profile
from tests.conftest import JFK, TEST_THREADS


def test_options_check_their_values_and_name_their_run():
    assert CaldOptions().train_chunk_sizes == (25, 50, 100, 200, None)
    assert CaldOptions().run_name() == "-cald-hedgehog-c100w50"
    assert CaldOptions(feature_map="elu", train_chunks=(50,)).run_name() == "-cald-elu-c100w50-t50"
    for bad, match in (
        ({"feature_map": "cosine"}, "feature_map"),
        ({"chunk_frames": 0}, "chunk_frames"),
        ({"window_frames": -1}, "window_frames"),
        ({"train_chunks": (-5,)}, "train_chunks"),
        ({"transfer_epochs": -1}, "transfer_epochs"),
    ):
        with pytest.raises(ValueError, match=match):
            CaldOptions(**bad)


def test_cald_composes_with_fvt_not_adaptwin():
    from asr_app.adapt import AdaptOptions

    assert AdaptOptions.from_flat(("cald", "fvt")).method_names == ("cald", "fvt")
    with pytest.raises(ValueError, match="do not compose"):
        AdaptOptions.from_flat(("adaptwin", "cald"))
    with pytest.raises(ValueError, match="an option of cald"):
        AdaptOptions.from_flat(("adaptwin",), chunk_frames=50)


def test_the_command_line_gives_cald_its_options():
    from asr_app.cli import build_parser
    from asr_app.cli.adapt import _adapt_options

    args = build_parser().parse_args(
        ["adapt", "--profile", "p", "--methods", "cald", "--chunk-frames", "50", "--train-chunks", "25", "0"]
    )
    opts = _adapt_options(args).method("cald")
    assert (opts.chunk_frames, opts.train_chunks, opts.window_frames) == (50, (25, 0), 50)


def test_dynamic_chunks_are_drawn_in_training_alike_in_every_layer_and_fixed_in_eval():
    from asr_app.compression.cald.apply import convert_encoder

    model = _whisper()
    layers = convert_encoder(model, chunk_frames=12, window_frames=4, train_chunks=(3, 5, 8, None))
    enc = model.model.encoder
    mel = torch.randn(1, 80, 96)
    model.train()
    drawn = []
    for _ in range(8):
        enc(mel)
        drawn.append([attn.current_chunk for attn in layers])
    assert all(len(set(d)) == 1 for d in drawn)  # the same size in every layer for a batch
    assert len({d[0] for d in drawn}) > 1  # and not always the same one
    # the output is the one that chunk size gives
    chunk = layers[0].current_chunk
    x = torch.randn(1, 48, 32)
    layers[0].eval()
    layers[0].chunk_frames = chunk
    want = layers[0](x)[0]
    layers[0].chunk_frames = 12
    assert layers[0].current_chunk == 12 and not torch.allclose(layers[0](x)[0], want)
    assert layers[0].reach(48).shape == (48, 48)
    assert layers[0].reach(48)[0, 12] == torch.tensor(False)  # a chunk of 12 reaches no key after it


def test_layerwise_attention_kl_compares_reachable_keys_for_hybrid_layers():
    """The shared layer-wise term on a hybrid student: zero when the student's weights are the
    teacher's softmax restricted to its reach, positive otherwise."""
    from asr_app.compression.cald.apply import convert_encoder
    from asr_app.compression.distill import attention_map_kl

    teacher = _whisper()
    student = _whisper()
    convert_encoder(student, chunk_frames=None, window_frames=4)
    x = torch.randn(2, 48, 32)
    t_layer, s_layer = teacher.model.encoder.layers[0], student.model.encoder.layers[0]
    assert float(attention_map_kl(t_layer, s_layer, x, query_stride=1)) == pytest.approx(0.0, abs=1e-5)
    s_layer.self_attn.chunk_frames = 8  # the linear part now stands in for the older keys
    kl = attention_map_kl(t_layer, s_layer, x, torch.ones(2, 48), query_stride=2)
    assert float(kl) > 1e-3
    kl.backward()
    assert s_layer.self_attn.feature_q.weight.grad is not None


def test_adapt_with_cald_resumes_saves_reloads_and_exports(synthetic_whisper, tmp_path, monkeypatch):
    import asr_app.decoding
    from asr_app.adapt import Adapter, AdaptOptions, run_adapt
    from asr_app.audio import load_audio
    from asr_app.compression.cald.layer import HybridSelfAttention
    from asr_app.models import load_model
    from asr_app.transcribe import TranscribeOptions, Transcriber

    monkeypatch.setenv("ASR_APP_DATA_DIR", str(tmp_path / "data"))
    greedy = functools.partial(asr_app.decoding.DecodingOptions, temperatures=(0.0,), sample_len=20)
    monkeypatch.setattr(asr_app.decoding, "DecodingOptions", greedy)
    profile = _speech_profile(tmp_path)
    opts = AdaptOptions(
        base=str(synthetic_whisper),
        methods=(CaldOptions(chunk_frames=100, window_frames=50, train_chunks=(50, 0), transfer_epochs=0.5),),
        layerwise_epochs=0.5,
        finetune_epochs=0.5,
        batch_size=2,
        lora_rank=2,
        control=False,
        speed_perturb=(),
        threads=TEST_THREADS,
    )
    assert Adapter(profile, opts).stage_names() == [
        "data",
        "calibrate",
        "cald.convert",
        "cald.transfer",
        "layerwise",
        "finetune",
        "save",
        "control",
        "evaluate",
        "report",
    ]
    transfer_steps = []

    def interrupt(kind, payload):
        if kind == "progress" and payload[0] == "cald.transfer":
            transfer_steps.append(payload[1])
        if kind == "stage" and payload == "layerwise":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_adapt(profile, opts, interrupt)
    assert transfer_steps and transfer_steps[-1] == len(transfer_steps)
    chunks_seen = []
    real_forward = HybridSelfAttention.forward

    def spy(self, *a, **k):
        out = real_forward(self, *a, **k)
        if self.training:
            chunks_seen.append(self.current_chunk)
        return out

    monkeypatch.setattr(HybridSelfAttention, "forward", spy)
    events = []
    report = run_adapt(profile, opts, lambda k, p: events.append((k, p)))
    assert not [p for k, p in events if k == "progress" and p[0] == "cald.transfer"]  # not redone
    # the resumed model's layers draw their chunks again (the saved block keeps no training settings)
    assert set(chunks_seen) == {50, None}
    (block,) = report.methods
    assert block == {"method": "cald", "version": 1, "feature_map": "hedgehog", "chunk_frames": 100,
                     "window_frames": 50, "layers": 2}  # fmt: skip
    assert report.params["compressed"]["encoder"] > report.params["original"]["encoder"]  # feature maps added
    folder = Path(report.model_dir)
    bundle = load_model(str(folder), backend="torch")
    attns = [layer.self_attn for layer in bundle.model.model.encoder.layers]
    assert all(isinstance(a, HybridSelfAttention) and a.chunk_frames == 100 for a in attns)
    from safetensors.torch import load_file

    final = load_file(str(profile.path / "adapt" / opts.run_name() / "finetune.safetensors"))
    state = bundle.model.state_dict()
    assert any("feature_q" in k for k in final)
    assert all(torch.equal(state[k], v) for k, v in final.items() if k in state)
    transcript = Transcriber(TranscribeOptions(vad=False), bundle=bundle).transcribe_audio(load_audio(JFK))
    assert transcript.language == "en"
    # with --encoder-padding a CALD model encodes a window's audio and that much padding
    heard = Transcriber(
        TranscribeOptions(vad=False, decoding=asr_app.decoding.DecodingOptions(encoder_padding_s=6.0)), bundle=bundle
    )
    assert heard.decoder.runner.content_pad_frames == 600
    assert heard.transcribe_audio(load_audio(JFK)).language == "en"
    # the ONNX export (own ops HybridAttention, HedgehogFeatureMap) computes what torch computes
    onnx_bundle = load_model(str(folder), backend="onnx", quantize="none")
    mel = torch.randn(1, 80, 3000)
    with torch.no_grad():
        want = bundle.model.model.encoder(mel).last_hidden_state
    got = onnx_bundle.encoder.run(None, {"input_features": mel.numpy()})[0]
    np.testing.assert_allclose(got, want.numpy(), atol=2e-4)
    onnx_text = Transcriber(TranscribeOptions(vad=False), bundle=onnx_bundle).transcribe_audio(load_audio(JFK)).text
    assert onnx_text == transcript.text

    # live: the buffer's encoding is kept up to date as audio arrives, and decodes read it
    from asr_app.streaming import StreamingOptions, StreamingTranscriber

    assert StreamingTranscriber(bundle)._incremental is None  # the whole window by default
    options = StreamingOptions(decoding=asr_app.decoding.DecodingOptions(encoder_padding_s=6.0))
    stream = StreamingTranscriber(bundle, options)
    assert stream._incremental is not None
    seen = []
    real = stream.decoder.decode_features
    monkeypatch.setattr(stream.decoder, "decode_features", lambda f, p=None: seen.append(f.shape) or real(f, p))
    audio = load_audio(JFK)
    for start in range(0, len(audio), 8000):
        stream.insert_audio(audio[start : start + 8000])
        stream.process()
        if not stream._incremental.stale:  # a cut buffer is re-encoded at the next read
            assert abs(stream._incremental.encoder.mel_frames - len(stream._buffer) // 160) <= 2
    stream.finish()
    assert seen and all(s[1] % 100 == 0 and s[1] <= 1500 for s in seen)  # whole chunks, at most 30 s
