"""The in-domain tokenizer of fast vocabulary transfer: a byte-level BPE trained on word
counts (general English from `wordfreq`, the speaker's transcripts and the enrollment
prompts up-weighted, a user's own domain text), or a subset of the original vocabulary, and
the Whisper tokenizer built around it (Whisper's special, language, task and timestamp
tokens appended after the new text tokens in their original order).

Byte-level BPE (the `tokenizers` library's trainer, GPT-2's pre-tokenizer as Whisper uses):
every byte is a token, so any text stays encodable and nothing is out of vocabulary.

Word counts are kept in the byte-level form the BPE model sees ("Ġword" for " word"); a
count is how many times a pre-token occurs in the corpus the tokenizer is trained on.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

GENERAL_WORDS = 30_000  # wordfreq's most frequent English words taken
GENERAL_TOTAL = 2_000_000  # word occurrences they stand for (frequency x this)
CAPITALIZED_SHARE = 0.1  # of each general word's count, given to its Capitalized form


def pre_tokens(text: str) -> list[str]:
    """The byte-level pre-tokens of `text` as Whisper's tokenizer splits it, with the
    leading space Whisper's transcripts start with ("Ġhello", "Ġworld", ",").

    Args:
        text: any Unicode text.
    Returns:
        Pre-tokens in byte-level form (each byte one printable character, GPT-2's map).
    """
    from tokenizers import pre_tokenizers

    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return [piece for piece, _ in pre.pre_tokenize_str(" " + " ".join(text.split()))]


def text_counts(texts: Iterable[str], weight: float = 1.0) -> Counter[str]:
    """Pre-token counts of `texts`, each occurrence counting `weight` (rounded up to an int
    per pre-token, so a weighted word is never dropped)."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(pre_tokens(text))
    return Counter({k: max(1, round(v * weight)) for k, v in counts.items()})


def general_english_counts(n_words: int = GENERAL_WORDS, total: int = GENERAL_TOTAL) -> Counter[str]:
    """Word counts of general English from `wordfreq` (its word frequencies, scaled to
    `total` occurrences): " word" for each of the `n_words` most frequent words, and
    " Word" with CAPITALIZED_SHARE of its count (sentence starts, names). Words with
    digits are left out (wordfreq folds digits; the byte alphabet encodes numbers).

    Raises:
        ImportError: wordfreq is not installed (it is a dependency of the app).
    Source: wordfreq (Speer, 2022), the `en` list.
    """
    from wordfreq import top_n_list, word_frequency

    counts: Counter[str] = Counter()
    for word in top_n_list("en", n_words):
        if any(ch.isdigit() for ch in word):
            continue
        n = word_frequency(word, "en") * total
        lower = round(n * (1 - CAPITALIZED_SHARE))
        upper = round(n * CAPITALIZED_SHARE)
        for form, c in ((word, lower), (word[:1].upper() + word[1:], upper)):
            if c >= 1:
                for piece in pre_tokens(form):
                    counts[piece] += c
    return counts


NUMBER_COUNT = 20  # occurrences given to each number of `number_counts`


def number_counts(count: int = NUMBER_COUNT) -> Counter[str]:
    """Numbers as Whisper writes them in digits ("1818", "14th", "$5", "10%"): 0-100, the
    years 1000-2030 and the ordinals to 31, each `count` times (wordfreq folds digits, so
    the general English counts have none)."""
    texts = [str(n) for n in range(101)] + [str(y) for y in range(1000, 2031)]
    texts += [
        f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}" for n in range(1, 32)
    ]
    return text_counts([" ".join(texts)], count)


def train_bpe(counts: Counter[str], n_tokens: int) -> Any:
    """A byte-level BPE of `n_tokens` text tokens (the 256 bytes and the merges learned on
    `counts`).

    Args:
        counts: pre-token counts (byte-level form, as `text_counts`).
        n_tokens: vocabulary size without Whisper's special tokens, >= 256 + 1.
    Returns:
        a `tokenizers.Tokenizer` (BPE model, byte-level pre-tokenizer and decoder).
    Raises:
        ValueError: n_tokens below 257 or empty counts.
    Source: byte-level BPE (Radford et al. 2019, GPT-2); the `tokenizers` BpeTrainer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if n_tokens < 257:
        raise ValueError(f"n_tokens must be >= 257 (the 256 bytes and a merge), got {n_tokens}")
    if not counts:
        raise ValueError("no text to train the tokenizer on")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=n_tokens,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    # the pre-tokens are given in byte-level form: turn them back into text so the
    # trainer's own pre-tokenizer maps them the same way again
    to_text = decoders.ByteLevel()

    def corpus():
        for piece, c in counts.items():
            text = to_text.decode([piece])
            yield text * c

    tok.train_from_iterator(corpus(), trainer=trainer, length=len(counts))
    return tok


def bpe_parts(bpe_json: dict) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab {token: id}, merges [(left, right)] in rank order) of a tokenizer.json's BPE
    model (either merges format: "a b" strings or [a, b] pairs)."""
    model = bpe_json["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges  # type: ignore[return-value]


def subset_bpe(old_bpe_json: dict, first_special_id: int, counts: Counter[str], n_tokens: int) -> Any:
    """A vocabulary of `n_tokens` tokens of the original tokenizer (every row transfers
    exactly): the 256 bytes, then the tokens the original tokenizer uses most on `counts`,
    each with the tokens its merge is made of, then unused ones in id order; the original
    merges whose parts and result are all kept, in their original order. With every text
    token of the original kept, the vocabulary and its ids are the original's.

    Args:
        old_bpe_json: the original tokenizer.json as a dict (a byte-level BPE model).
        first_special_id: the original's first special token id (<|endoftext|>); ids from
            it on are not text tokens.
        counts: pre-token counts (as `text_counts`).
        n_tokens: text tokens to keep, >= 257.
    Returns:
        a `tokenizers.Tokenizer` with the kept tokens in their original id order.
    Raises:
        ValueError: n_tokens below 257.
    """
    from tokenizers import Tokenizer

    if n_tokens < 257:
        raise ValueError(f"n_tokens must be >= 257, got {n_tokens}")
    vocab, merges = bpe_parts(old_bpe_json)
    text_vocab = {t: i for t, i in vocab.items() if i < first_special_id}
    parents: dict[str, tuple[str, str]] = {}
    for a, b in merges:
        parents.setdefault(a + b, (a, b))
    old = Tokenizer.from_str(json.dumps(old_bpe_json)).model
    usage: Counter[str] = Counter()
    for piece, c in counts.items():
        for t in old.tokenize(piece):
            usage[t.value] += c
    by_id = sorted(text_vocab, key=text_vocab.__getitem__)
    kept: set[str] = set(by_id[:256])  # GPT-2's first 256 ids are the byte alphabet
    # the most used tokens first, then (for a large n_tokens) the rest in original id order
    for t in [t for t, _ in usage.most_common()] + by_id:
        if len(kept) >= n_tokens:
            break
        if t not in kept:
            needed = _missing_ancestors(t, parents, kept) | {t}
            if len(kept) + len(needed) <= n_tokens:
                kept |= needed
    tokens = sorted(kept, key=text_vocab.__getitem__)
    new_vocab = {t: i for i, t in enumerate(tokens)}
    new_merges = [(a, b) for a, b in merges if a in kept and b in kept and a + b in kept]
    return Tokenizer.from_str(json.dumps(_bpe_only(old_bpe_json, new_vocab, new_merges)))


def _missing_ancestors(t: str, parents: dict, kept: set[str]) -> set[str]:
    """The tokens `t`'s merge is made of, and theirs in turn, that are not kept yet."""
    seen: set[str] = set()
    stack = [p for p in parents.get(t, ()) if p not in kept]
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        stack.extend(p for p in parents.get(x, ()) if p not in kept and p not in seen)
    return seen


def _bpe_only(template: dict, vocab: dict[str, int], merges: list[tuple[str, str]]) -> dict:
    """A tokenizer.json dict: `template`'s pre-tokenizer and decoder, a BPE model of `vocab`
    and `merges`, no added tokens and no post-processor."""
    model = {k: v for k, v in template["model"].items() if k not in ("vocab", "merges")}
    model.update(type="BPE", vocab=vocab, merges=[f"{a} {b}" for a, b in merges])
    return {
        "version": template.get("version", "1.0"),
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": template["pre_tokenizer"],
        "post_processor": None,
        "decoder": template["decoder"],
        "model": model,
    }


def whisper_tokenizer_json(old_json: dict, first_special_id: int, text_bpe_json: dict) -> tuple[dict, dict[int, int]]:
    """The tokenizer.json of the new Whisper tokenizer: `text_bpe_json`'s BPE model (ids
    0..n-1), then every added token of the original (special, language, task and
    timestamp tokens: ids >= first_special_id) in its original order, renumbered from n.

    Args:
        old_json: the original Whisper tokenizer.json (dict).
        first_special_id: id of the original's <|endoftext|>.
        text_bpe_json: the new text tokenizer (dict, ids 0..n-1).
    Returns:
        (tokenizer.json dict, {old special id: new id}).
    Raises:
        ValueError: the original has text tokens past first_special_id (not Whisper's layout).
    """
    n = len(text_bpe_json["model"]["vocab"])
    added = sorted(old_json["added_tokens"], key=lambda t: t["id"])
    if any(t["id"] < first_special_id for t in added):
        raise ValueError("added tokens below <|endoftext|>: not Whisper's vocabulary layout")
    id_map = {t["id"]: n + t["id"] - first_special_id for t in added}
    out = json.loads(json.dumps(old_json))
    out["model"] = json.loads(json.dumps(text_bpe_json["model"]))
    out["added_tokens"] = [{**t, "id": id_map[t["id"]]} for t in added]
    post = out.get("post_processor")
    if isinstance(post, dict) and isinstance(post.get("special_tokens"), dict):
        for spec in post["special_tokens"].values():
            spec["ids"] = [id_map.get(i, i) for i in spec["ids"]]
    return out, id_map


def build_whisper_tokenizer(old_tokenizer: Any, tokenizer_json: dict) -> Any:
    """A Whisper tokenizer of the same class and settings as `old_tokenizer` (a transformers
    `WhisperTokenizer`) on `tokenizer_json`: the old one is saved, its tokenizer.json
    replaced, and the folder loaded back (so special-token settings carry over as they
    are saved)."""
    with tempfile.TemporaryDirectory() as tmp:
        old_tokenizer.save_pretrained(tmp)
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(tokenizer_json), encoding="utf-8")
        return type(old_tokenizer).from_pretrained(tmp)
