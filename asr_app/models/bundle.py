"""A loaded model as decoding sees it: the `Bundle` protocol, the torch `WhisperBundle`,
and what an adapted model's config.json says about it (`language_of_block`).

Imports no torch and nothing of the backends: the ONNX bundle
(`asr_app.onnx.OnnxWhisperBundle`) satisfies the protocol without importing this module's
dataclass, and decoding reads only the protocol's fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from asr_app.models.convert import SpecialTokens


@runtime_checkable
class Bundle(Protocol):
    """What decoding, transcription and streaming read from a loaded model, on either backend.

    `asr_app.models.load_model` returns a `WhisperBundle` (torch) or an
    `asr_app.onnx.OnnxWhisperBundle` (onnxruntime); both satisfy this protocol.

    Attributes:
        name: what the user asked for ("tiny.en", a folder, a hub id).
        backend: "torch" or "onnx" (one of `asr_app.models.BACKENDS`): which runner
            `asr_app.decoding.make_runner` builds (`WhisperRunner` on `model`, or
            `asr_app.onnx.OnnxRunner` on the bundle's onnxruntime sessions).
        model: torch: `WhisperForConditionalGeneration`; onnx: only `config` (vocab_size,
            num_mel_bins) and `generation_config` (suppress_tokens), the weights being in
            the sessions.
        tokenizer: `encode(text, add_special_tokens)` -> ids, `decode(ids,
            skip_special_tokens)` -> str, `convert_tokens_to_ids(token)` -> id or None.
        feature_extractor: what `asr_app.audio.log_mel_window` takes (16 kHz samples ->
            (n_mels, frames) log-mel, 10 ms frames).
        special: ids of the special tokens.
        device: "cpu" or "cuda".
        path: the folder loaded (or the hub id).
        adapted_language: language an `asr-app adapt` model was trained to decode in
            (`language_of_block`); None for other models.
        is_multilingual: True when the vocabulary has the multilingual layout (51865+).
        n_mels: log-mel bins the encoder expects (80 or 128).
    """

    name: str
    backend: str
    model: object
    tokenizer: object
    feature_extractor: object
    special: SpecialTokens
    device: str
    path: str

    @property
    def adapted_language(self) -> str | None: ...

    @property
    def is_multilingual(self) -> bool: ...

    @property
    def n_mels(self) -> int: ...


@dataclass
class WhisperBundle:
    """A Whisper model loaded in PyTorch with what decoding needs (a `Bundle`).

    Attributes:
        name: what the user asked for (e.g. "tiny.en").
        model: `WhisperForConditionalGeneration`, eval mode, float32, on `device`.
        tokenizer: `WhisperTokenizer` with timestamp tokens.
        feature_extractor: `WhisperFeatureExtractor` (log-mel, numpy).
        special: ids of the special tokens.
        device: "cpu" or "cuda".
        path: the Hugging Face folder loaded, or the hub id.
        adapted_language: language an `asr-app adapt` model was trained to decode in (from
            its config.json, see `language_of_block`); None for other models.
        backend: always "torch" (the ONNX bundle says "onnx").
        multilingual: what the model's config.json records (a model with a new vocabulary,
            see `multilingual_of_block`), or None: the vocabulary's size tells.
    """

    name: str
    model: Any  # a transformers WhisperForConditionalGeneration
    tokenizer: object
    feature_extractor: object
    special: SpecialTokens
    device: str
    path: str
    adapted_language: str | None = None
    backend: str = "torch"
    multilingual: bool | None = None

    @property
    def is_multilingual(self) -> bool:
        """What the model records, else whether the vocabulary has the multilingual layout
        (51865+ tokens)."""
        if self.multilingual is not None:
            return self.multilingual
        return self.model.config.vocab_size >= MULTILINGUAL_VOCAB_SIZE

    @property
    def n_mels(self) -> int:
        """Number of log-mel bins the encoder expects (80 or 128)."""
        return self.model.config.num_mel_bins


MULTILINGUAL_VOCAB_SIZE = 51865  # Whisper's multilingual vocabulary; English-only has 51864


def multilingual_of_block(block: dict | None) -> bool | None:
    """Whether a compressed model decodes with language and task tokens, when one of its
    method blocks records it (a method that changed the vocabulary, such as FVT, whose
    size then says nothing); None when none does."""
    if not block:
        return None
    for mb in block.get("methods") or []:
        if isinstance(mb, dict) and isinstance(mb.get("multilingual"), bool):
            return mb["multilingual"]
    return None


def special_tokens_of(tokenizer) -> SpecialTokens:
    """The special token ids of a transformers Whisper tokenizer (its added tokens).

    Raises:
        ModelError: a required special token is missing.
    """
    added = [{"content": t.content, "id": i} for i, t in tokenizer.added_tokens_decoder.items()]
    return SpecialTokens(added)


def language_of_block(block: dict | None) -> str | None:
    """The language recorded in an adapted model's compression block (config.json).

    Models adapted before the language was recorded were all trained with the English
    prefix, so a block without one means "en"; no block (not an adapted model) gives None.
    """
    if block is None:
        return None
    return block.get("language") or "en"
