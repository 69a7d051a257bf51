"""The multilingual built-in `base` (two PyPI parts): conversion, language detection, prompt."""

import pytest

from asr_app.wer import normalize
from tests.conftest import JFK, require_data


@pytest.fixture(scope="module")
def base(cache_root):
    from asr_app.errors import ModelError
    from asr_app.models import load_model

    try:
        return load_model("base")
    except ModelError as e:
        pytest.skip(str(e))


@pytest.mark.slow
def test_base_converts_from_two_parts_and_detects_english(base):
    from asr_app.transcribe import TranscribeOptions, Transcriber

    require_data(JFK)
    assert base.is_multilingual and base.model.config.d_model == 512
    assert base.special.languages["en"] == 50259 and len(base.special.languages) >= 99
    gc = base.model.generation_config
    assert gc.lang_to_id["<|en|>"] == 50259 and gc.task_to_id["transcribe"] == 50359
    t = Transcriber(TranscribeOptions(), bundle=base).transcribe_file(JFK)
    assert t.language == "en"
    assert "ask not what your country can do for you" in normalize(t.text)


def test_base_prompt_has_language_and_task(base):
    from asr_app.decoding import DecodingOptions, WindowDecoder

    d = WindowDecoder(base, DecodingOptions(language="fr", task="translate"))
    sp = base.special
    assert d.prompt("fr") == [sp.sot, sp.languages["fr"], sp.translate]


def test_adapted_multilingual_model_decodes_in_its_recorded_language(base, tmp_path):
    """An `asr-app adapt` model is trained on one language's prefix: decoding uses it
    instead of detecting with the compressed encoder, unless a language is given."""
    import copy

    from asr_app.compression.adaptwin.apply import compress_encoder
    from asr_app.compression.adaptwin.config import CompressionPlan
    from asr_app.compression.adaptwin.method import ADAPTWIN
    from asr_app.compression.checkpoint import save_compressed
    from asr_app.decoding import DecodingOptions, WindowDecoder
    from asr_app.models import language_of_block, load_model

    model = copy.deepcopy(base.model)
    plan = CompressionPlan.uniform(6, 8, 64, None)
    compress_encoder(model, plan)
    folder = save_compressed(model, tmp_path / "m", [ADAPTWIN.block(plan)], {"base_model": "base", "language": "de"})
    base.tokenizer.save_pretrained(str(folder))
    base.feature_extractor.save_pretrained(str(folder))
    adapted = load_model(str(folder))
    assert adapted.adapted_language == "de" and base.adapted_language is None
    assert WindowDecoder(adapted, DecodingOptions()).options.language == "de"
    assert WindowDecoder(adapted, DecodingOptions(language="fr")).options.language == "fr"
    assert WindowDecoder(base, DecodingOptions()).options.language is None  # detects
    # models adapted before the language was recorded were trained on the English prefix
    assert language_of_block({"method": "adaptwin"}) == "en" and language_of_block(None) is None
