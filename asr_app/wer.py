"""Word error rate, corpus-level, after Whisper's English text normalizer (jiwer)."""

from __future__ import annotations

import functools
from dataclasses import dataclass


@functools.lru_cache(maxsize=1)
def _normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize(text: str) -> str:
    """Whisper's English normalizer (spelling map, numbers, punctuation, case)."""
    return _normalizer()(text)


@dataclass(frozen=True)
class WerCounts:
    """Edit counts over a corpus. wer = (S + D + I) / N, as a fraction."""

    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        return self.errors / self.reference_words if self.reference_words else 0.0

    def __add__(self, other: "WerCounts") -> "WerCounts":
        return WerCounts(self.substitutions + other.substitutions, self.deletions + other.deletions,
                         self.insertions + other.insertions, self.reference_words + other.reference_words)


def wer_counts(reference: str, hypothesis: str, normalized: bool = False) -> WerCounts:
    """Edit counts of one pair, after normalization unless `normalized`.

    An empty reference counts every hypothesis word as an insertion.
    """
    import jiwer

    ref = reference if normalized else normalize(reference)
    hyp = hypothesis if normalized else normalize(hypothesis)
    if not ref.split():
        return WerCounts(0, 0, len(hyp.split()), 0)
    if not hyp.split():
        return WerCounts(0, len(ref.split()), 0, len(ref.split()))
    o = jiwer.process_words(ref, hyp)
    return WerCounts(o.substitutions, o.deletions, o.insertions, len(ref.split()))


def corpus_wer(references: list[str], hypotheses: list[str]) -> WerCounts:
    """Total edits over total reference words (not a mean of per-utterance WERs)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    total = WerCounts(0, 0, 0, 0)
    for r, h in zip(references, hypotheses):
        total = total + wer_counts(r, h)
    return total
