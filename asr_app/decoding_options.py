"""What one window's decoding is asked to do (`DecodingOptions`) and what it gives back
(`DecodingResult`); used by `decoding` and by the rules in `whisper_rules`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DecodingOptions:
    """Options of one window's decoding.

    Attributes:
        language: ISO code such as "en"; None detects it (multilingual models only).
        task: "transcribe" or "translate" (multilingual models only).
        beam_size: 1 is greedy; >1 is beam search (patience 1, length-normalized score).
        best_of: candidates sampled at each temperature > 0; the likeliest is kept.
        temperatures: tried in order; the next is used when the result fails the
            compression-ratio or log-probability test (whisper's fallback).
        without_timestamps: decode with `<|notimestamps|>` (no segment times).
        suppress_blank: forbid a blank or end-of-text as the first sampled token.
        max_initial_timestamp_s: the first timestamp may not exceed this (seconds).
        sample_len: the most tokens sampled per window (whisper: 224).
        compression_ratio_threshold: gzip ratio above which output counts as repetitive.
        logprob_threshold: average log-probability below which the output counts as failed.
        no_speech_threshold: with a failed log-probability, a `<|nospeech|>` probability
            above this marks the window silent.
        seed: for sampling at temperature > 0.
        encoder_padding_s: a CALD model on the torch backend encodes only a window's audio
            and at least this many seconds of its padding (rounded up to whole chunks),
            live mode only new audio; None (the default) encodes the whole 30-s window.
            Faster, less accurate until the decoder is trained on it (docs/results/cald.md).
    Raises:
        ValueError: from __post_init__ on out-of-range values, naming the field.
    """

    language: str | None = None
    task: str = "transcribe"
    beam_size: int = 1
    best_of: int = 5
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    without_timestamps: bool = False
    suppress_blank: bool = True
    max_initial_timestamp_s: float = 1.0
    sample_len: int = 224
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    seed: int = 0
    encoder_padding_s: float | None = None

    def __post_init__(self):
        if self.encoder_padding_s is not None and not 0 <= self.encoder_padding_s <= 30:
            raise ValueError(f"encoder_padding_s must be None or in 0..30 seconds, got {self.encoder_padding_s}")
        if self.task not in ("transcribe", "translate"):
            raise ValueError(f"task must be 'transcribe' or 'translate', got {self.task!r}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.best_of < 1:
            raise ValueError(f"best_of must be >= 1, got {self.best_of}")
        if not self.temperatures or any(t < 0 for t in self.temperatures):
            raise ValueError(f"temperatures must be a non-empty tuple of values >= 0, got {self.temperatures}")
        if not 1 <= self.sample_len <= 448:
            raise ValueError(f"sample_len must be in 1..448, got {self.sample_len}")


@dataclass
class DecodingResult:
    """Result of decoding one window.

    Attributes:
        tokens: sampled tokens (text and timestamps), without prompt and end-of-text.
        avg_logprob: sum of sampled log-probabilities / (len(tokens) + 1).
        no_speech_prob: probability of `<|nospeech|>` at the first step.
        compression_ratio: gzip compression ratio of the decoded text.
        temperature: the temperature that produced this result.
        language: the language decoded in.
    """

    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    language: str
    text: str = ""
