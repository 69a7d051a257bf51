"""FVT: the speaker's tokenizer, the embedding transfer, the resized model, and a whole
adaptation with `--methods fvt` on a synthetic Whisper (resume, save, reload, ONNX)."""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from asr_app.compression.fvt.options import FvtOptions
from tests.conftest import JFK, TEST_THREADS, require_data

CORPUS = [
    "And so my fellow Americans, ask not what your country can do for you.",
    "Prendergast read the printing history of Gutenberg's Bible aloud.",
    "The printers of Venice and Mainz set type by hand.",
]


def _small_counts():
    """CORPUS weighted up, and wordfreq's 3,000 most frequent English words."""
    from asr_app.compression.fvt.tokenizer import general_english_counts, text_counts

    return text_counts(CORPUS, 20) + general_english_counts(3000, 200_000)


def _built(tiny, n_tokens=600, init="fvt"):
    """A copy of tiny.en moved to a vocabulary of `n_tokens` text tokens trained on CORPUS."""
    from asr_app.compression.fvt.apply import apply_vocabulary
    from asr_app.compression.fvt.stages import build_vocabulary

    model = copy.deepcopy(tiny.model)
    tok, built = build_vocabulary(
        tiny.tokenizer, tiny.special.eot, model, _small_counts(), FvtOptions(vocab_size=n_tokens, init=init)
    )
    apply_vocabulary(model, built["embedding"], built["config"])
    return model, tok, built


def test_the_mean_of_the_pieces_initialises_a_new_token_as_computed_by_hand():
    from asr_app.compression.fvt.transfer import transfer_embeddings

    old = torch.arange(20, dtype=torch.float32).reshape(5, 4)  # rows 0..3 text, row 4 special
    vocab = {"a": 0, "b": 1, "ab": 2, "c": 3}
    pieces = {"abc": [2, 3], "cc": [3, 3]}
    rows, stats = transfer_embeddings(old, vocab, pieces.__getitem__, ["a", "abc", "cc", "b"], [4], "fvt")
    assert torch.equal(rows[0], old[0]) and torch.equal(rows[3], old[1])  # shared tokens: exact
    assert torch.equal(rows[1], torch.tensor([10.0, 11.0, 12.0, 13.0]))  # (row 2 + row 3) / 2
    assert torch.equal(rows[2], old[3])  # the mean of one row twice
    assert torch.equal(rows[4], old[4])  # special rows copied after the text tokens
    assert stats.to_dict() == {"exact": 2, "mean": 2, "random": 0}
    rows, stats = transfer_embeddings(old, vocab, pieces.__getitem__, ["a", "abc"], [4], "pvt", seed=1)
    assert torch.equal(rows[0], old[0]) and not torch.equal(rows[1], old[2:4].mean(0)) and stats.random == 1
    with pytest.raises(ValueError, match="not in the original"):
        transfer_embeddings(old, vocab, pieces.__getitem__, ["abc"], [4], "subset")


def test_shared_tokens_keep_their_rows_exactly_and_new_ones_are_their_pieces_mean(tiny):
    from asr_app.compression.fvt.tokenizer import bpe_parts

    model, tok, built = _built(tiny)
    old_vocab, _ = bpe_parts(json.loads(tiny.tokenizer.backend_tokenizer.to_str()))
    new_vocab = json.loads(tok.backend_tokenizer.to_str())["model"]["vocab"]
    old_rows = tiny.model.model.decoder.embed_tokens.weight
    new_rows = model.model.decoder.embed_tokens.weight
    shared = [t for t in new_vocab if t in old_vocab and old_vocab[t] < tiny.special.eot]
    assert len(shared) == built["transfer"]["exact"] > 256
    assert all(torch.equal(new_rows[new_vocab[t]], old_rows[old_vocab[t]]) for t in shared)
    novel = [t for t in new_vocab if t not in old_vocab]
    assert len(novel) == built["transfer"]["mean"]
    for t in novel[:20]:
        pieces = [x for x in tiny.tokenizer.backend_tokenizer.model.tokenize(t)]
        assert "".join(p.value for p in pieces) == t
        want = torch.stack([old_rows[p.id] for p in pieces]).mean(0)
        torch.testing.assert_close(new_rows[new_vocab[t]], want, rtol=0, atol=1e-6)
    # one tied matrix for input and output
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    assert model.config.vocab_size == new_rows.shape[0] == 600 + (tiny.model.config.vocab_size - tiny.special.eot)


def test_special_tokens_keep_their_roles_after_the_new_text_tokens(tiny):
    from asr_app.models.bundle import special_tokens_of

    model, tok, built = _built(tiny)
    old, new = tiny.special, special_tokens_of(tok)
    offset = 600 - old.eot
    for name in ("eot", "sot", "translate", "transcribe", "prev", "no_speech", "no_timestamps", "timestamp_begin"):
        assert getattr(new, name) == getattr(old, name) + offset, name
        assert tok.convert_ids_to_tokens(getattr(new, name)) == tiny.tokenizer.convert_ids_to_tokens(getattr(old, name))
    assert new.languages == {k: v + offset for k, v in old.languages.items()}
    assert tok.convert_ids_to_tokens(new.timestamp_begin + 1500) == "<|30.00|>"
    # the configs follow: generation starts, ends and pads with the moved ids
    assert model.config.decoder_start_token_id == new.sot and model.config.eos_token_id == new.eot
    assert model.generation_config.no_timestamps_token_id == new.no_timestamps
    suppressed = {tok.decode([i]) for i in model.generation_config.suppress_tokens if i < new.eot}
    assert {"(", "[", "#"} <= {s.strip() for s in suppressed}
    assert not any(w in suppressed for w in (" the", " and", "'s"))
    assert model.generation_config.begin_suppress_tokens == [tok.convert_tokens_to_ids("Ġ"), new.eot]


def test_the_byte_level_tokenizer_encodes_any_unicode_text(tiny):
    _, tok, _ = _built(tiny, n_tokens=300)
    for text in (
        " naïve café – Ærøskøbing",
        " 東京で会いましょう",
        " 🙂👍🏽 ♪",
        " \t tabs and  spaces",
        " Prendergast",
    ):
        ids = tok.encode(text, add_special_tokens=False)
        assert ids and max(ids) < 300 and tok.decode(ids) == text


def test_the_subset_vocabulary_keeps_only_original_rows_and_the_full_one_is_a_no_op(tiny):
    from asr_app.models.bundle import special_tokens_of

    model, tok, built = _built(tiny, n_tokens=700, init="subset")
    assert built["transfer"] == {"exact": 700, "mean": 0, "random": 0}
    text = " ask not what your country can do for you"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    require_data(JFK)
    model, tok, built = _built(tiny, n_tokens=tiny.special.eot, init="subset")
    assert torch.equal(model.model.decoder.embed_tokens.weight, tiny.model.model.decoder.embed_tokens.weight)
    same = replace(tiny, model=model, tokenizer=tok, special=special_tokens_of(tok), multilingual=False)
    assert _window_tokens(same) == _window_tokens(tiny)


def _window_tokens(bundle) -> list[int]:
    """The tokens greedy decoding gives JFK's window on `bundle`."""
    from asr_app.audio import load_audio, log_mel_window
    from asr_app.decoding import DecodingOptions, WindowDecoder

    mel = log_mel_window(bundle.feature_extractor, load_audio(JFK))
    return WindowDecoder(bundle, DecodingOptions(temperatures=(0.0,))).decode(mel).tokens


def test_options_are_validated():
    with pytest.raises(ValueError, match="vocab_size"):
        FvtOptions(vocab_size=100)
    with pytest.raises(ValueError, match="init"):
        FvtOptions(init="random")
    with pytest.raises(ValueError, match="domain_weight"):
        FvtOptions(domain_weight=0)
    from asr_app.adapt import AdaptOptions

    with pytest.raises(ValueError, match="fvt changes the vocabulary and must come last"):
        AdaptOptions.from_flat(("fvt", "adaptwin"))
    with pytest.raises(ValueError, match="an option of fvt: add it to --methods"):
        AdaptOptions.from_flat(("adaptwin",), vocab_size=6000)
    both = AdaptOptions.from_flat(("adaptwin", "fvt"), target_ratio=0.85, vocab_size=6000)
    assert both.method("fvt").vocab_size == 6000 and both.method("adaptwin").target_ratio == 0.85


def test_domain_text_weighs_into_the_tokenizer(tmp_path):
    from asr_app.compression.fvt.stages import corpus_counts

    terms = tmp_path / "terms.txt"
    terms.write_text("Zylberstein pharmacokinetics Zylberstein", encoding="utf-8")
    ctx = SimpleNamespace(transcripts=["hello there"], prompt_texts=[], unlabeled_texts=["Quixworth said hello"])
    counts, sizes = corpus_counts(ctx, FvtOptions(general_words=0, domain_text=(str(terms),), domain_weight=3))
    assert counts["ĠZylberstein"] == 6 and counts["Ġpharmacokinetics"] == 3 and counts["Ġhello"] == 6
    assert sizes == {"general": 0, "transcripts": 6, "prompts": 0, "unlabeled": 9, "domain_text": 9}
    assert FvtOptions(domain_text=(str(terms),)).run_name() != FvtOptions().run_name()
    with pytest.raises(ValueError, match="cannot read"):
        corpus_counts(ctx, FvtOptions(general_words=0, domain_text=(str(tmp_path / "missing.txt"),)))


def _speech_profile(tmp_path):
    """A profile of 12 LibriSpeech test-clean and JFK takes (real words for the tokenizer
    and the relabelled targets; the synthetic model's accuracy does not matter)."""
    from asr_app.audio import load_audio
    from asr_app.datasets import load_dataset
    from asr_app.enroll.profile import Profile
    from tests.conftest import TEST_CLEAN

    require_data(TEST_CLEAN, JFK)
    profile = Profile.create_or_open(tmp_path / "spk", speaker="test")
    utts = load_dataset(TEST_CLEAN)
    for i in range(12):
        u = utts[i % len(utts)]
        profile.add_take(load_audio(u.audio)[: 16000 * 4], u.text, f"p{i}", 1, source="import")
    return profile


def test_adapt_with_fvt_resumes_saves_loads_and_exports(synthetic_whisper, tmp_path, monkeypatch):
    import asr_app.compression.fvt.stages as fvt_stages
    import asr_app.decoding
    from asr_app.adapt import Adapter, AdaptOptions, run_adapt
    from asr_app.audio import load_audio
    from asr_app.models import load_model
    from asr_app.transcribe import TranscribeOptions, Transcriber

    monkeypatch.setenv("ASR_APP_DATA_DIR", str(tmp_path / "data"))
    greedy = functools.partial(asr_app.decoding.DecodingOptions, temperatures=(0.0,), sample_len=40)
    monkeypatch.setattr(asr_app.decoding, "DecodingOptions", greedy)
    trained = []
    real_train = fvt_stages.build_vocabulary
    monkeypatch.setattr(
        fvt_stages, "build_vocabulary", lambda *a, **k: trained.append(1) or real_train(*a, **k), raising=True
    )
    profile = _speech_profile(tmp_path)
    opts = AdaptOptions(
        base=str(synthetic_whisper),
        methods=(FvtOptions(vocab_size=500, general_words=2000, recover_epochs=0.5),),
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
        "fvt.transfer",
        "fvt.recover",
        "finetune",
        "save",
        "footprint",
        "control",
        "evaluate",
        "report",
    ]

    def interrupt(kind, payload):
        if kind == "stage" and payload == "finetune":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_adapt(profile, opts, interrupt)
    assert trained == [1]
    report = run_adapt(profile, opts)
    assert trained == [1]  # resumed: the tokenizer came from the run folder
    (block,) = report.methods
    assert block["method"] == "fvt" and block["text_tokens"] == 500 and block["multilingual"] is False
    assert report.params["compressed"]["model"] < report.params["original"]["model"]
    assert report.tokenizer["original"] > 0 and report.tokenizer["compressed"] > 0
    original, compressed = report.footprint["original"], report.footprint["compressed"]
    assert compressed["vocab_size"] == block["vocab_size"] < original["vocab_size"]
    assert compressed["int8_bytes"] < original["int8_bytes"] and compressed["decoder_ms_per_token"] > 0

    folder = Path(report.model_dir)
    torch_bundle = load_model(str(folder))
    assert torch_bundle.model.config.vocab_size == block["vocab_size"] == len(torch_bundle.tokenizer)
    assert torch_bundle.special.eot == 500 and not torch_bundle.is_multilingual
    text = " the printers of Venice"
    assert torch_bundle.tokenizer.decode(torch_bundle.tokenizer.encode(text, add_special_tokens=False)) == text
    # the saved model is the trained one, with its tokenizer
    run_folder = profile.path / "adapt" / opts.run_name()
    from safetensors.torch import load_file

    final = load_file(str(run_folder / "finetune.safetensors"))
    state = torch_bundle.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in final.items() if k in state)

    onnx_bundle = load_model(str(folder), backend="onnx", quantize="none")
    assert onnx_bundle.special.eot == 500 and not onnx_bundle.is_multilingual
    assert _window_tokens(onnx_bundle) == _window_tokens(torch_bundle)
    transcript = Transcriber(TranscribeOptions(vad=False), bundle=onnx_bundle).transcribe_audio(load_audio(JFK))
    assert transcript.language == "en"
    # the exported decoder's logits over the smaller vocabulary equal torch's
    mel = torch.randn(1, 80, 3000)
    prompt = [onnx_bundle.special.sot, 17, 42]
    with torch.no_grad():
        logits = torch_bundle.model(input_features=mel, decoder_input_ids=torch.tensor([prompt])).logits
    assert logits.shape[-1] == block["vocab_size"]
    from asr_app.onnx.runtime import OnnxRunner

    runner = OnnxRunner(onnx_bundle)
    got, _ = runner.step(np.array([prompt]), runner.encode(mel[0].numpy()), None)
    np.testing.assert_allclose(got, logits[:, -1].numpy(), atol=1e-4)
