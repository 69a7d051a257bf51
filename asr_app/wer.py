"""Word error rate, corpus-level, after Whisper's English text normalizer (jiwer)."""

from __future__ import annotations

import dataclasses
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

    def __add__(self, other: WerCounts) -> WerCounts:
        return WerCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_words + other.reference_words,
        )


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


@dataclass
class RunningWer:
    """WER of a growing transcript against the part of a reference read so far.

    The reference is the text the speaker reads (given up front, or appended prompt by
    prompt); reference words after the last one matched by the transcript are not yet
    read and do not count as deletions.

    Attributes:
        reference_words, hypothesis_words: normalized words.
    """

    reference_words: list = dataclasses.field(default_factory=list)
    hypothesis_words: list = dataclasses.field(default_factory=list)

    def add_reference(self, text: str) -> None:
        self.reference_words += normalize(text).split()

    def add_hypothesis(self, text: str) -> None:
        self.hypothesis_words += normalize(text).split()

    def score(self) -> tuple[WerCounts, list[int]]:
        """(counts over the read part, indices of hypothesis words in error)."""
        errors = self.errors()
        return errors.counts, errors.wrong

    def errors(self) -> RunningErrors:
        """Counts over the read part, and where the errors are on both sides."""
        import jiwer

        ref, hyp = self.reference_words, self.hypothesis_words
        if not ref or not hyp:
            return RunningErrors(
                WerCounts(0, 0, len(hyp) if not ref else 0, 0), list(range(len(hyp))) if not ref else [], []
            )
        out = jiwer.process_words(" ".join(ref), " ".join(hyp))
        chunks = out.alignments[0]
        last_ref = max((c.ref_end_idx for c in chunks if c.type in ("equal", "substitute")), default=0)
        s = d = i = 0
        wrong: list[int] = []
        missed: list[int] = []
        for c in chunks:
            if c.type == "substitute" and c.ref_start_idx < last_ref:
                s += min(c.ref_end_idx, last_ref) - c.ref_start_idx
                wrong += list(range(c.hyp_start_idx, c.hyp_end_idx))
            elif c.type == "delete" and c.ref_start_idx < last_ref:
                d += min(c.ref_end_idx, last_ref) - c.ref_start_idx
                missed += list(range(c.ref_start_idx, min(c.ref_end_idx, last_ref)))
            elif c.type == "insert":
                i += c.hyp_end_idx - c.hyp_start_idx
                wrong += list(range(c.hyp_start_idx, c.hyp_end_idx))
        return RunningErrors(WerCounts(s, d, i, last_ref), wrong, missed)


@dataclass(frozen=True)
class RunningErrors:
    """Where a running transcript is wrong.

    Attributes:
        counts: edit counts over the reference read so far.
        wrong: indices into `hypothesis_words` of substituted and inserted words.
        missed: indices into `reference_words` of deleted words (read but not transcribed).
    """

    counts: WerCounts
    wrong: list[int]
    missed: list[int]
