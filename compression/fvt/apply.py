"""Put a new vocabulary into a Whisper model: resize the token embedding and the output
projection (one tied matrix), and move every token id the configs hold (start, end and
padding tokens, suppressed tokens, timestamp and task tokens) to the new vocabulary."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from asr_app.compression.surgery import decoder_of

# config fields that hold one token id (model.config and generation_config)
ID_FIELDS = (
    "decoder_start_token_id",
    "eos_token_id",
    "pad_token_id",
    "bos_token_id",
    "no_timestamps_token_id",
    "prev_sot_token_id",
)
LIST_FIELDS = ("suppress_tokens", "begin_suppress_tokens")
# a suppressed symbol this short inside a longer token is ordinary spelling ("don't", "well-known")
_INWORD_SYMBOLS = re.compile(r"^['\-]$")


def resize_vocabulary(model: Any, vocab_size: int, pad_token_id: int) -> None:
    """Give `model` (a `WhisperForConditionalGeneration`) a token embedding of `vocab_size`
    rows and an output projection tied to it (weights uninitialised: set or load them).

    Raises:
        ValueError: pad_token_id outside the new vocabulary.
    """
    if not 0 <= pad_token_id < vocab_size:
        raise ValueError(f"pad_token_id {pad_token_id} is outside a vocabulary of {vocab_size}")
    decoder = decoder_of(model)
    d_model = decoder.embed_tokens.weight.shape[1]
    old = decoder.embed_tokens.weight
    decoder.embed_tokens = nn.Embedding(
        vocab_size, d_model, padding_idx=pad_token_id, dtype=old.dtype, device=old.device
    )
    model.proj_out = nn.Linear(d_model, vocab_size, bias=False, dtype=old.dtype, device=old.device)
    model.proj_out.weight = decoder.embed_tokens.weight
    model.config.vocab_size = vocab_size
    decoder.padding_idx = pad_token_id


def remapped_config(model: Any, id_map: dict[int, int], suppress: list[int], begin_suppress: list[int]) -> dict:
    """The token-id fields of `model`'s config and generation config moved to the new
    vocabulary: single ids through `id_map` (special tokens), the suppressed lists as given;
    language and task maps of multilingual models too. JSON-able, for the method block."""
    gen = model.generation_config
    out: dict[str, Any] = {}
    for name in ID_FIELDS:
        value = getattr(gen, name, None)
        if value is None:
            value = getattr(model.config, name, None)
        if isinstance(value, int):
            out[name] = id_map.get(value, value)
    out["suppress_tokens"] = list(suppress)
    out["begin_suppress_tokens"] = list(begin_suppress)
    for name in ("lang_to_id", "task_to_id"):
        mapping = getattr(gen, name, None)
        if isinstance(mapping, dict):
            out[name] = {k: id_map.get(v, v) for k, v in mapping.items()}
    return out


def set_config(model: Any, values: dict) -> None:
    """Write `remapped_config` values into `model.config` and `model.generation_config`."""
    for name, value in values.items():
        if (name in ID_FIELDS or name in LIST_FIELDS) and hasattr(model.config, name):
            setattr(model.config, name, value)
        setattr(model.generation_config, name, value)


def apply_vocabulary(model: Any, embedding: Tensor, config_values: dict) -> None:
    """Resize `model` to `embedding`'s rows, copy them into the tied matrix and move the
    configs' token ids (`remapped_config`).

    Args:
        model: `WhisperForConditionalGeneration`.
        embedding: (vocab_size, d_model) rows in the new vocabulary's id order.
        config_values: from `remapped_config`.
    """
    import torch

    resize_vocabulary(model, embedding.shape[0], config_values["pad_token_id"])
    with torch.no_grad():
        decoder_of(model).embed_tokens.weight.copy_(embedding)
    set_config(model, config_values)


def suppressed_tokens(
    old_suppress: Sequence[int],
    old_token: Callable[[int], str | None],
    new_tokens: Sequence[str],
    decode: Callable[[str], str],
    id_map: dict[int, int],
) -> list[int]:
    """The new vocabulary's suppressed ids: special tokens through `id_map`; a new text
    token when its byte string is a suppressed original token's, or when its text holds a
    suppressed symbol ('(', '[', '♪', ...; a lone "-" or "'" only as the whole token, as
    they spell words too).

    Args:
        old_suppress: the original's suppressed ids.
        old_token: original id -> byte-level token string (None for special ids).
        new_tokens: new text tokens' byte-level strings, in id order.
        decode: byte-level token string -> text.
        id_map: original special id -> new id.
    Returns:
        sorted new ids.
    """
    exact: set[str] = set()
    symbols: set[str] = set()
    out: set[int] = set()
    for i in old_suppress:
        if i in id_map:
            out.add(id_map[i])
            continue
        token = old_token(i)
        if token is None:
            continue
        exact.add(token)
        text = decode(token).strip()
        if text and "\ufffd" not in text and not _INWORD_SYMBOLS.match(text):
            symbols.add(text)
    for new_id, token in enumerate(new_tokens):
        if token in exact:
            out.add(new_id)
            continue
        text = decode(token)
        if "\ufffd" not in text and any(s in text for s in symbols):
            out.add(new_id)
    return sorted(out)
