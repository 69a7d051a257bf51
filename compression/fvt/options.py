"""FVT's adaptation options (the `fvt` part of `asr-app adapt`'s options)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FvtOptions:
    """How the speaker's vocabulary is built and transferred.

    Attributes:
        vocab_size: text tokens of the new byte-level BPE (the 256 bytes included);
            Whisper's 1,608 special, language, task and timestamp tokens come on top.
        init: "fvt" (a new token is the mean of its original pieces' embeddings), "pvt"
            (shared tokens keep their rows, others random) or "subset" (only original
            tokens, every row exact).
        domain_text: text files (names, terms, a field's vocabulary) weighed into the
            tokenizer like the speaker's transcripts.
        domain_weight: how many times a word of the transcripts, prompts and domain text
            counts against one occurrence in general English.
        general_words: wordfreq's most frequent English words in the corpus.
        recover_epochs: passes of the vocabulary recovery over the speaker's windows
            (the tied embedding trained, everything else frozen; 0 skips it).
        recover_lr: its learning rate.
    Raises:
        ValueError: out-of-range values, naming the field.
    Source: Gee et al., "Fast Vocabulary Transfer for Language Model Compression" (2022).
    """

    method = "fvt"  # the registry name these options belong to (a class attribute)

    vocab_size: int = 8000
    init: str = "fvt"
    domain_text: tuple[str, ...] = ()
    domain_weight: float = 50.0
    general_words: int = 30_000
    recover_epochs: float = 2.0
    recover_lr: float = 1e-4

    def __post_init__(self):
        if not 257 <= self.vocab_size <= 100_000:
            raise ValueError(f"vocab_size must be in [257, 100000], got {self.vocab_size}")
        if self.init not in ("fvt", "pvt", "subset"):
            raise ValueError(f"init must be 'fvt', 'pvt' or 'subset', got {self.init!r}")
        if self.domain_weight <= 0:
            raise ValueError(f"domain_weight must be > 0, got {self.domain_weight}")
        if not 0 <= self.general_words <= 100_000:
            raise ValueError(f"general_words must be in [0, 100000], got {self.general_words}")
        if self.recover_epochs < 0:
            raise ValueError(f"recover_epochs must be >= 0, got {self.recover_epochs}")
        if self.recover_lr <= 0:
            raise ValueError(f"recover_lr must be > 0, got {self.recover_lr}")

    @property
    def needs_activation_stats(self) -> bool:
        """FVT needs no activation statistics."""
        return False

    @property
    def changes_vocabulary(self) -> bool:
        """The model gets a new tokenizer (logit distillation toward the original is off)."""
        return True

    @property
    def compresses_encoder(self) -> bool:
        """The encoder stays as it is (layer-wise distillation is skipped for FVT alone)."""
        return False

    @property
    def compresses_decoder(self) -> bool:
        """The decoder's layers stay as they are (only its vocabulary changes)."""
        return False

    def run_name(self) -> str:
        """This method's part of the run folder's name."""
        name = f"-fvt{self.vocab_size}"
        if self.init != "fvt":
            name += f"-{self.init}"
        if self.domain_text:  # another set of domain files is another run
            import hashlib

            digest = hashlib.sha256("\n".join(self.domain_text).encode()).hexdigest()[:8]
            name += f"-domain{digest}"
        return name
