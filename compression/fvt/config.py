"""What an FVT model records in its method block of config.json: the new vocabulary's
size, how its rows were initialised, whether the model is multilingual (the vocabulary's
size no longer tells), and the token ids its configs hold in the new vocabulary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

METHOD = "fvt"
METHOD_VERSION = 1  # bump when the saved layout changes


@dataclass
class VocabularyPlan:
    """An FVT model's vocabulary.

    Attributes:
        vocab_size: rows of the tied embedding: text tokens + Whisper's special, language,
            task and timestamp tokens.
        text_tokens: the new byte-level BPE's tokens (ids 0..text_tokens-1); the special
            tokens follow in their original order.
        init: "fvt", "pvt" or "subset" (see `transfer.py`).
        multilingual: whether decoding uses language and task tokens (English-only models
            such as tiny.en do not).
        config: the token-id fields of config.json and generation_config in the new
            vocabulary (`apply.remapped_config`).
        transfer: how many rows were exact, mean-initialised or random.
        corpus: what the tokenizer was trained on (word occurrences per source).
    Raises:
        ValueError: sizes that do not fit, an unknown init.
    """

    vocab_size: int
    text_tokens: int
    init: str = "fvt"
    multilingual: bool = False
    config: dict = field(default_factory=dict)
    transfer: dict = field(default_factory=dict)
    corpus: dict = field(default_factory=dict)

    def __post_init__(self):
        if not 257 <= self.text_tokens < self.vocab_size:
            raise ValueError(f"text_tokens must be in [257, vocab_size), got {self.text_tokens} of {self.vocab_size}")
        if self.init not in ("fvt", "pvt", "subset"):
            raise ValueError(f"init must be fvt, pvt or subset, got {self.init!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VocabularyPlan:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def method_block(plan: VocabularyPlan) -> dict:
    """The block saved in config.json's method list."""
    return {"method": METHOD, "version": METHOD_VERSION, **plan.to_dict()}
