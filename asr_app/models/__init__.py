"""Whisper models: resolve a name, convert CTranslate2 weights, load for inference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from asr_app.errors import ModelError
from asr_app.models.convert import SpecialTokens
from asr_app.models.resolver import DEFAULT_MODEL, BUILTIN_MODELS, ModelSource, converted_dir, find_model

__all__ = ["DEFAULT_MODEL", "BUILTIN_MODELS", "WhisperBundle", "load_model", "find_model", "ModelSource",
           "quiet_transformers_logging"]


@dataclass
class WhisperBundle:
    """A loaded Whisper model with what decoding needs.

    Attributes:
        name: what the user asked for (e.g. "tiny.en").
        model: `WhisperForConditionalGeneration`, eval mode, float32, on `device`.
        tokenizer: `WhisperTokenizer` with timestamp tokens.
        feature_extractor: `WhisperFeatureExtractor` (log-mel, numpy).
        special: ids of the special tokens.
        device: "cpu" or "cuda".
        path: the Hugging Face folder loaded, or the hub id.
    """

    name: str
    model: object
    tokenizer: object
    feature_extractor: object
    special: SpecialTokens
    device: str
    path: str

    @property
    def is_multilingual(self) -> bool:
        """True when the vocabulary has the multilingual layout (51865+ tokens)."""
        return self.model.config.vocab_size >= 51865

    @property
    def n_mels(self) -> int:
        """Number of log-mel bins the encoder expects (80 or 128)."""
        return self.model.config.num_mel_bins


def quiet_transformers_logging() -> None:
    """Hide transformers' info logs and weight-loading progress bars (for CLI processes)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_model(name: str = DEFAULT_MODEL, device: str = "cpu") -> WhisperBundle:
    """Load a Whisper model by built-in name, folder or hub id (see `resolver`).

    Args:
        name: "tiny.en", "base", a CTranslate2 or Hugging Face folder, a compressed model
            folder written by `asr-app adapt`, or a hub id.
        device: "cpu" or "cuda".
    Returns:
        A WhisperBundle ready for `asr_app.decoding`.
    Raises:
        ModelError: unknown name, missing package, corrupt files, hub unreachable,
            or device "cuda" without a GPU.
    """
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    if device not in ("cpu", "cuda"):
        raise ModelError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda: no CUDA GPU is visible to torch; use --device cpu")
    from asr_app.compression.adaptwin.checkpoint import is_compressed_dir, load_compressed

    source = find_model(name)
    location = str(converted_dir(source)) if source.kind == "ct2" else source.location
    try:
        if is_compressed_dir(location):  # a model written by `asr-app adapt`
            model, _ = load_compressed(location)
        else:
            model = WhisperForConditionalGeneration.from_pretrained(location, dtype=torch.float32)
        tokenizer = WhisperTokenizer.from_pretrained(location)
        feature_extractor = WhisperFeatureExtractor.from_pretrained(location)
    except (OSError, ValueError) as e:
        hint = " (no network? use a built-in model or a local folder)" if source.kind == "hf" and not Path(location).exists() else ""
        raise ModelError(f"cannot load model {name!r} from {location}{hint}: {e}") from None
    added = [{"content": t.content, "id": i} for i, t in tokenizer.added_tokens_decoder.items()]
    special = SpecialTokens([t for t in added if not t["content"][2:-2].replace(".", "").isdigit()])
    model.eval().to(device)
    return WhisperBundle(name, model, tokenizer, feature_extractor, special, device, location)
