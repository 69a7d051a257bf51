"""One decode of the streaming buffer as words with end times (`_Hypothesis`, `_Segment`), and
the alignment that finds where the words already committed end in it (`skip_committed`)."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from asr_app.audio import HOP_LENGTH, SAMPLE_RATE_HZ


@dataclass
class _Segment:
    """One Whisper segment of a decoded span; times are seconds from the span's start."""

    start_s: float
    end_s: float | None  # None: the segment was still open when decoding stopped
    words: list[str]

    def word_ends_s(self, span_s: float) -> list[float]:
        """End time of each word, span-relative, spread over the segment by characters."""
        end = self.end_s if self.end_s is not None else span_s
        total = sum(len(w) + 1 for w in self.words)
        out, acc = [], 0
        for w in self.words:
            acc += len(w) + 1
            out.append(self.start_s + (end - self.start_s) * acc / total)
        return out


@dataclass
class _Hypothesis:
    """One decode of the buffer's first `span` samples."""

    segments: list[_Segment]
    words: list[str]
    ends_s: list[float]  # absolute audio time of each word's end
    span: int  # samples decoded, from the buffer's start
    temperature: float = 0.0  # of the decode that gave it

    @property
    def closed_end_s(self) -> float | None:
        """Where the last segment was closed (span-relative seconds); None if it is open."""
        if not self.segments or self.segments[-1].end_s is None:
            return None
        return self.segments[-1].end_s


_PUNCT = re.compile(r"[^\w']+")


def _to_hop(seconds: float) -> int:
    """A time in seconds as a sample count on the log-mel hop grid (160 samples)."""
    return round(seconds * SAMPLE_RATE_HZ) // HOP_LENGTH * HOP_LENGTH


def _key(word: str) -> str:
    return _PUNCT.sub("", word.lower())


def skip_committed(committed: list[str], words: list[str], slack: int | None = None, tail_chars: int = 32) -> int:
    """How many leading `words` of a new hypothesis stand for the `committed` words.

    Usually the new hypothesis repeats them exactly and the answer is len(committed). When
    it does not (a word split in two, two merged, re-spelled, a phrase of the context left
    out), the letters of the committed words' end are compared (difflib) with the letters
    of each candidate prefix of `words` within `slack` words of that count, and the
    closest prefix wins (ties: the one nearest len(committed)).

    Args:
        committed: words already committed from this buffer, in order.
        words: the new hypothesis of the same buffer.
        slack: how far from len(committed) the boundary is looked for, words; default
            max(3, len(committed) // 3), since a re-decode of 15 s of context can leave
            out or add a whole phrase.
        tail_chars: how many letters before the boundary are compared.
    Returns:
        An index into `words` (0 to len(words)).
    """
    k = len(committed)
    if slack is None:
        slack = max(3, k // 3)
    a = [_key(w) for w in committed]
    b = [_key(w) for w in words]
    if not k or b[:k] == a:
        return min(k, len(words))
    target = "".join(a)[-tail_chars:]
    best_j, best = min(k, len(words)), -1.0
    for j in range(max(0, k - slack), min(len(words), k + slack) + 1):
        ratio = difflib.SequenceMatcher(None, target, "".join(b[:j])[-tail_chars:], autojunk=False).ratio()
        if ratio > best + 1e-9 or (abs(ratio - best) <= 1e-9 and abs(j - k) < abs(best_j - k)):
            best_j, best = j, ratio
    return best_j
