"""Streaming transcription: a clock-free state machine over Whisper's 30-second decoder.

    stream = StreamingTranscriber(bundle)
    stream.insert_audio(chunk)          # any size, float32 16 kHz
    update = stream.process()           # at most one decode; None when there was nothing to do
    ... update.committed (new stable text), update.tentative (current unstable tail)
    final = stream.finish()

Policy (whisper_streaming's LocalAgreement-n, Macháček et al. 2023, plus VAD gating):
- Audio accumulates in a buffer. Every `min_chunk_s` of new speech, the buffer is decoded
  with the text committed before it as the decoder prompt. Words on which the last
  `local_agreement_n` hypotheses agree (longest common prefix, after the words already
  committed from this buffer) are committed; the rest is shown as tentative.
- silero-vad runs on every 32 ms frame as audio arrives. Silence never triggers a decode.
  Where speech is followed by `phrase_end_silence_ms` of silence a phrase ends: the buffer
  up to there is finalized (decoded once more with temperature fallback, everything
  committed) and cut there. Phrase ends are found as audio arrives, so a lagging processor
  still finalizes phrase by phrase.
- A buffer that grows past `max_buffer_s` without a phrase end is finalized up to its
  quietest 32 ms frame (by the VAD) within the last `cut_search_s`, so work per update
  stays bounded and no word is cut in two where a pause exists.
- Finalizing never drops audio it has not transcribed: when Whisper closes its last
  segment well before the end of the audio and the VAD heard speech after it (Whisper
  stops early on long windows), the rest is decoded again from that timestamp, as
  offline transcription's seek does. Words committed earlier from the buffer are found in
  the final hypothesis by alignment, not by count, so a re-decode that splits or joins a
  word neither drops nor repeats the words after it.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass

import numpy as np

from asr_app.audio import HOP_LENGTH, N_SAMPLES, SAMPLE_RATE_HZ, SECONDS_PER_TOKEN, log_mel_window
from asr_app.decoding import DecodingOptions, WindowDecoder
from asr_app.vad import FRAME_SAMPLES, SileroVad

MIN_DECODE_SAMPLES = SAMPLE_RATE_HZ // 10  # 0.1 s
PHRASE_END_PAD_SAMPLES = SAMPLE_RATE_HZ // 5  # 0.2 s kept after a phrase's last speech frame
LEAD_IN_SAMPLES = SAMPLE_RATE_HZ // 2  # 0.5 s of silence kept before the next speech
UNCOVERED_S = 1.0  # audio after Whisper's last closed segment that is decoded again if it holds speech
CONTEXT_GAP_S = 2.0  # a pause longer than this between phrases drops the context
MAX_FINAL_DECODES = 8  # decodes per finalized span (each one moves forward)
MIN_WORDS_PER_SPEECH_S = 1.6  # read speech here: 1.6 words per second at the slowest utterance, 3.2 median
MIN_SPLIT_SPEECH_S = 4.0  # shorter spans are never split


@dataclass(frozen=True)
class StreamingOptions:
    """Streaming policy settings.

    Attributes:
        min_chunk_s: new audio needed before another decode of the buffer, seconds.
        phrase_end_silence_ms: silence after speech that ends a phrase (commit everything).
        max_buffer_s: finalize the buffer at a pause once it is longer than this, seconds
            (must stay under Whisper's 30 s window).
        cut_search_s: how far back from the buffer's end that pause is looked for, seconds.
        local_agreement_n: how many consecutive hypotheses must agree on a word before it
            is committed between phrase ends (whisper_streaming uses 2; 3 commits later and
            less often wrongly).
        context_s: finished phrases of the last this many seconds stay in the buffer, so
            the next phrase is decoded with the audio before it, as offline windows are
            (their words are known and skipped); 0 cuts the buffer at every phrase end.
        vad_threshold: silero-vad speech probability at which speech starts; inside a
            phrase, speech goes on until the probability falls below `vad_threshold - 0.15`
            (silero-vad's hysteresis).
        prompt_words: committed words before the buffer given as the decoder prompt.
        decoding: DecodingOptions of the end-of-phrase decode; intermediate decodes use only
            its first temperature (their unfinished words would trigger needless fallbacks).
    Raises:
        ValueError: out-of-range values, naming the field.
    """

    min_chunk_s: float = 2.0
    phrase_end_silence_ms: int = 400
    max_buffer_s: float = 20.0
    cut_search_s: float = 5.0
    local_agreement_n: int = 3
    context_s: float = 15.0
    vad_threshold: float = 0.5
    prompt_words: int = 40
    decoding: DecodingOptions = dataclasses.field(default_factory=DecodingOptions)

    def __post_init__(self):
        if not 0.1 <= self.min_chunk_s <= 10:
            raise ValueError(f"min_chunk_s must be in [0.1, 10], got {self.min_chunk_s}")
        if not 5 <= self.max_buffer_s <= 28:
            raise ValueError(f"max_buffer_s must be in [5, 28], got {self.max_buffer_s}")
        if not 1 <= self.cut_search_s <= self.max_buffer_s - 1:
            raise ValueError(f"cut_search_s must be in [1, max_buffer_s - 1], got {self.cut_search_s}")
        if not 0 <= self.context_s <= self.max_buffer_s - 5:
            raise ValueError(f"context_s must be in [0, max_buffer_s - 5], got {self.context_s}")
        if not 2 <= self.local_agreement_n <= 5:
            raise ValueError(f"local_agreement_n must be in [2, 5], got {self.local_agreement_n}")
        if self.phrase_end_silence_ms < 100:
            raise ValueError(f"phrase_end_silence_ms must be >= 100, got {self.phrase_end_silence_ms}")
        if not 0.16 <= self.vad_threshold < 1:
            raise ValueError(f"vad_threshold must be in [0.16, 1), got {self.vad_threshold}")


@dataclass
class StreamUpdate:
    """What one `process()` or `finish()` produced.

    Attributes:
        committed: newly committed text, to append to what was committed before (never
            changes afterwards).
        tentative: the current unconfirmed tail (replaces the previous tentative text).
        audio_end_s: audio time the update accounts for, seconds.
        phrase_ended: this update closed a phrase (everything so far is committed).
        decoded: whether the model ran.
        phrase_end_s: with phrase_ended, where the phrase's speech ended in the audio.
    """

    committed: str
    tentative: str
    audio_end_s: float
    phrase_ended: bool = False
    decoded: bool = False
    phrase_end_s: float | None = None


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


class StreamingTranscriber:
    """LocalAgreement-n streaming over a WindowDecoder (see module docstring).

    Args:
        bundle: a loaded WhisperBundle or OnnxWhisperBundle.
        options: StreamingOptions.
    """

    def __init__(self, bundle, options: StreamingOptions = StreamingOptions()):
        self.bundle = bundle
        self.options = options
        self.final_decoder = WindowDecoder(bundle, options.decoding)
        self.decoder = WindowDecoder(bundle, dataclasses.replace(options.decoding,
                                                                 temperatures=options.decoding.temperatures[:1]))
        self.vad = SileroVad()  # its own stream state
        self._exit_threshold = max(options.vad_threshold - 0.15, 0.01)
        self._silence_samples = int(options.phrase_end_silence_ms / 1000 * SAMPLE_RATE_HZ)
        self.committed_words: list[str] = []
        self.committed_ends_s: list[float] = []  # approximate audio end time of each committed word
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # sample index of the buffer's first sample
        self._total = 0  # samples inserted
        self._probs: list[float] = []  # VAD probability of each 32 ms frame since `_probs_start`
        self._probs_start = 0  # frame index of _probs[0]
        self._last_speech_end: int | None = None  # sample index
        self._in_phrase = False  # speech seen and no phrase-ending silence since
        self._phrase_ends: list[int] = []  # sample indices where finished phrases end
        self._decoded_upto = 0  # sample index of the buffer end at the last decode
        self._buffer_words: list[str] = []  # words committed from the current buffer
        self._pieces: list[tuple[int, list[str]]] = []  # finished (start sample, words) kept as context
        self._piece_start = 0  # sample index where the piece being transcribed starts
        self._prompt_start = 0  # committed words before this index are never a prompt again
        self._tails: list[list[str]] = []  # uncommitted words of the last hypotheses, oldest first
        self._tentative: list[str] = []

    # -- input ------------------------------------------------------------------------------
    def insert_audio(self, chunk: np.ndarray) -> None:
        """Append (samples,) float32 16 kHz audio and run the VAD over it."""
        chunk = np.asarray(chunk, np.float32).reshape(-1)
        self._buffer = np.concatenate([self._buffer, chunk])
        self._total += len(chunk)
        for prob in self.vad.probabilities(chunk).tolist():
            frame_end = (self._probs_start + len(self._probs) + 1) * FRAME_SAMPLES
            self._probs.append(prob)
            if prob >= self.options.vad_threshold or (self._in_phrase and prob >= self._exit_threshold):
                self._last_speech_end = frame_end
                self._in_phrase = True
            elif self._in_phrase and frame_end - self._last_speech_end >= self._silence_samples:
                # a phrase ended: remember where (with a little padding), finalize it later
                self._phrase_ends.append(self._last_speech_end + PHRASE_END_PAD_SAMPLES)
                self._in_phrase = False

    @property
    def committed_text(self) -> str:
        """Everything committed so far."""
        return " ".join(self.committed_words)

    @property
    def audio_s(self) -> float:
        return self._total / SAMPLE_RATE_HZ

    # -- the policy -------------------------------------------------------------------------
    def process(self) -> StreamUpdate | None:
        """Do at most one decode step if the policy calls for it; None when nothing was due.

        A finished phrase (even one followed by more speech already, when processing lags)
        is finalized first; a buffer past `max_buffer_s` is finalized up to a pause;
        otherwise, during speech, the buffer is re-decoded once `min_chunk_s` of new audio
        has arrived.
        """
        if self._phrase_ends:
            return self._end_phrase(self._phrase_ends.pop(0))
        if not self._in_phrase:
            self._drop_silence()
            return None
        if len(self._buffer) > self.options.max_buffer_s * SAMPLE_RATE_HZ:
            return self._cut_long_buffer()
        if (self._total - self._decoded_upto) / SAMPLE_RATE_HZ < self.options.min_chunk_s:
            return None
        return self._update()

    def finish(self) -> StreamUpdate:
        """End of input: commit everything still in the buffer."""
        committed = []
        while self._phrase_ends:
            committed.append(self._end_phrase(self._phrase_ends.pop(0)).committed)
        if self._in_phrase:
            self._in_phrase = False
            committed.append(self._finalize(self._total))
        return StreamUpdate(" ".join(c for c in committed if c), "", self.audio_s, phrase_ended=True,
                            decoded=bool(committed))

    def _drop_silence(self) -> None:
        """Between phrases: keep the context and a short pause; after a long pause keep only
        a little lead-in for the next word."""
        if self._pieces and self._total - (self._last_speech_end or 0) < CONTEXT_GAP_S * SAMPLE_RATE_HZ:
            return
        if len(self._buffer) > 2 * LEAD_IN_SAMPLES or self._pieces:
            self._pieces, self._buffer_words = [], []
            self._cut(len(self._buffer) - LEAD_IN_SAMPLES)
            self._piece_start = self._buffer_start
            self._decoded_upto = self._total

    def _covers_context(self, hyp: _Hypothesis) -> bool:
        """Whether a decode of the buffer went past its context (the finished pieces kept):
        at least as many words, and, if it closed its last segment, closed it later; if it
        left its last segment open, it has words after the context, unless the VAD heard
        no speech after it (Whisper may repeat the context and stop, as before a chapter
        title read after a pause)."""
        known = sum(len(words) for _, words in self._pieces)
        closed = hyp.closed_end_s
        if len(hyp.words) < known:
            return False
        if closed is not None:  # in whole hops, as the finalize loop seeks: equal is no progress
            return self._buffer_start + _to_hop(closed) > self._piece_start
        return (skip_committed(self._buffer_words, hyp.words) < len(hyp.words)
                or not self._speech_between(self._piece_start, self._buffer_start + hyp.span))

    def _drop_context(self) -> None:
        """Cut the kept pieces away; the buffer starts at the piece being transcribed."""
        known = sum(len(words) for _, words in self._pieces)
        self._cut(self._piece_start - self._buffer_start)
        self._buffer_words = self._buffer_words[known:]
        self._pieces = []

    def _finish_piece(self, n: int) -> None:
        """The buffer's first `n` samples are transcribed and committed: the finished pieces
        of the last `context_s` stay in the buffer as context for the decodes that follow
        (their words known, see `skip_committed`), the rest is dropped."""
        end = self._buffer_start + min(max(0, n), len(self._buffer))
        known = sum(len(words) for _, words in self._pieces)
        self._pieces.append((self._piece_start, self._buffer_words[known:]))
        self._piece_start = end
        oldest = end - int(self.options.context_s * SAMPLE_RATE_HZ)
        while self._pieces and self._pieces[0][0] < oldest:
            self._pieces.pop(0)
        self._cut((self._pieces[0][0] if self._pieces else end) - self._buffer_start)
        self._buffer_words = [w for _, words in self._pieces for w in words]
        self._tails, self._tentative = [], []

    def _cut(self, n: int) -> None:
        """Drop the buffer's first `n` samples (and their VAD frames)."""
        n = min(max(0, n), len(self._buffer))
        self._buffer = self._buffer[n:]
        self._buffer_start += n
        drop = min(len(self._probs), self._buffer_start // FRAME_SAMPLES - self._probs_start)
        if drop > 0:
            del self._probs[:drop]
            self._probs_start += drop

    def _frame_probs(self, start: int, end: int) -> list[float]:
        """VAD probabilities of the frames overlapping samples [start, end) (absolute)."""
        lo = max(0, start // FRAME_SAMPLES - self._probs_start)
        hi = max(lo, -(-end // FRAME_SAMPLES) - self._probs_start)
        return self._probs[lo:hi]

    def _speech_between(self, start: int, end: int) -> bool:
        """Whether the VAD heard speech in samples [start, end) (absolute indices)."""
        return any(p >= self.options.vad_threshold for p in self._frame_probs(start, end))

    def _speech_s(self, start: int, end: int) -> float:
        """Seconds of VAD speech frames within samples [start, end) (absolute)."""
        speech = sum(p >= self.options.vad_threshold for p in self._frame_probs(start, end))
        return speech * FRAME_SAMPLES / SAMPLE_RATE_HZ

    def _hypothesis(self, span: int, final: bool = False) -> _Hypothesis:
        """Decode the buffer's first `span` samples (at most 30 s) with the committed text
        before the buffer as the prompt."""
        span = min(span, len(self._buffer), N_SAMPLES)
        tok = self.bundle.tokenizer
        before = self.committed_words[self._prompt_start : len(self.committed_words) - len(self._buffer_words)]
        prompt = tok.encode(" " + " ".join(before[-self.options.prompt_words :]), add_special_tokens=False) if before else None
        if span < MIN_DECODE_SAMPLES:  # nothing to hear: Whisper would only invent text
            return _Hypothesis([], [], [], span)
        mel = log_mel_window(self.bundle.feature_extractor, self._buffer[:span])
        result = (self.final_decoder if final else self.decoder).decode(mel, prompt)
        self._decoded_upto = self._total
        d = self.options.decoding
        if (d.no_speech_threshold is not None and result.no_speech_prob > d.no_speech_threshold
                and (d.logprob_threshold is None or result.avg_logprob < d.logprob_threshold)):
            return _Hypothesis([], [], [], span)
        segments = self._segments(result.tokens)
        span_s, offset_s = span / SAMPLE_RATE_HZ, self._buffer_start / SAMPLE_RATE_HZ
        words, ends = [], []
        for seg in segments:
            words += seg.words
            ends += [offset_s + e for e in seg.word_ends_s(span_s)]
        return _Hypothesis(segments, words, ends, span, result.temperature)

    def _segments(self, tokens: list[int]) -> list[_Segment]:
        """Split tokens at timestamps; a segment's end is the first timestamp after its text."""
        ts = self.bundle.special.timestamp_begin
        tok = self.bundle.tokenizer
        segments: list[_Segment] = []
        start, text = 0.0, []
        for t in tokens + [None]:
            if t is None or t >= ts:
                when = (t - ts) * SECONDS_PER_TOKEN if t is not None else None
                if text:
                    words = tok.decode(text).split()
                    if words:
                        segments.append(_Segment(start, when, words))
                    text = []
                if when is not None:
                    start = when
            else:
                text.append(t)
        return segments

    def _commit(self, words: list[str], ends: list[float]) -> str:
        self.committed_words += words
        self.committed_ends_s += ends
        self._buffer_words += words
        return " ".join(words)

    def _update(self) -> StreamUpdate:
        hyp = self._hypothesis(len(self._buffer))
        j = skip_committed(self._buffer_words, hyp.words)
        new, new_ends = hyp.words[j:], hyp.ends_s[j:]
        tails = (self._tails + [new])[-self.options.local_agreement_n :]
        n_agreed = 0
        if len(tails) == self.options.local_agreement_n:
            for column in zip(*tails):
                if len({_key(w) for w in column}) > 1:
                    break
                n_agreed += 1
        committed = self._commit(new[:n_agreed], new_ends[:n_agreed]) if n_agreed else ""
        self._tails = [tail[n_agreed:] for tail in tails]
        self._tentative = new[n_agreed:]
        return StreamUpdate(committed, " ".join(self._tentative), self.audio_s, decoded=True)

    def _end_phrase(self, end: int) -> StreamUpdate:
        """Finalize the buffer up to sample index `end` (a phrase end): commit all of it."""
        committed = self._finalize(end)
        return StreamUpdate(committed, "", self.audio_s, phrase_ended=True, decoded=True,
                            phrase_end_s=end / SAMPLE_RATE_HZ)

    def _quietest(self, start: int, end: int) -> int:
        """The middle of the quietest VAD frame within samples [start, end) (absolute), or
        `end` when no frame lies there."""
        first = max(start // FRAME_SAMPLES, self._probs_start)
        window = self._probs[first - self._probs_start : max(0, end // FRAME_SAMPLES - self._probs_start)]
        if not window:
            return end
        return (first + int(np.argmin(window))) * FRAME_SAMPLES + FRAME_SAMPLES // 2

    def _cut_long_buffer(self) -> StreamUpdate:
        """Finalize a buffer past `max_buffer_s` up to its quietest frame near the end."""
        buffer_end = self._buffer_start + len(self._buffer)
        cut = self._quietest(buffer_end - int(self.options.cut_search_s * SAMPLE_RATE_HZ),
                             buffer_end - SAMPLE_RATE_HZ // 4)  # 0.25 s guard against the newest audio
        return StreamUpdate(self._finalize(cut), "", self.audio_s, decoded=True)

    def _finalize(self, end: int) -> str:
        """Decode the buffer up to sample index `end`, commit every word, cut the buffer there.

        Never cuts away speech Whisper did not transcribe:
        - seeks like offline transcription: where a decode stops before the end of its
          span (its last segment closed more than UNCOVERED_S before the end with speech
          after it, or a span cut at 30 s), the words so far are committed, the buffer is
          cut at Whisper's last timestamp, and the rest is decoded again;
        - a decode that ends without a closing timestamp gives no such time; when its
          words are implausibly few for the speech the VAD heard (under
          MIN_WORDS_PER_SPEECH_S over more than MIN_SPLIT_SPEECH_S), the span is finalized
          in two parts split at its quietest frame, each decoded on its own.
        Returns the text committed.
        """
        committed = []
        targets = [end]  # span ends still to finalize, the nearest last
        for attempt in range(MAX_FINAL_DECODES):
            if not targets:
                break
            forced = attempt == MAX_FINAL_DECODES - 1  # the last decode commits what it has
            target = end if forced else targets[-1]
            span = min(max(0, target - self._buffer_start), len(self._buffer))
            hyp = self._hypothesis(span, final=True)
            if self._pieces and not forced and not self._covers_context(hyp):
                self._drop_context()  # Whisper lost its way in the context: decode without it
                continue
            j = skip_committed(self._buffer_words, hyp.words)
            last_piece = hyp.span == span
            closed = hyp.closed_end_s
            seek = None  # samples of the buffer fully transcribed, when less than the span
            if forced:
                pass
            elif closed is not None:
                closed_at = _to_hop(closed)
                if not last_piece or (hyp.span - closed_at > UNCOVERED_S * SAMPLE_RATE_HZ and
                                      self._speech_between(self._buffer_start + closed_at, self._buffer_start + span)):
                    seek = closed_at
            elif not last_piece and len(hyp.segments) > 1:
                # a 30 s span ending inside an open segment: redo that segment from its start
                open_seg = hyp.segments[-1]
                seek = _to_hop(open_seg.start_s)
                n = len(hyp.words) - len(open_seg.words)
                hyp = dataclasses.replace(hyp, segments=hyp.segments[:-1], words=hyp.words[:n], ends_s=hyp.ends_s[:n])
                j = min(j, n)
            elif last_piece and hyp.words and len(targets) < 4:
                speech_s = self._speech_s(self._buffer_start, self._buffer_start + span)
                if speech_s > MIN_SPLIT_SPEECH_S and len(hyp.words) < MIN_WORDS_PER_SPEECH_S * speech_s:
                    targets.append(self._quietest(self._buffer_start + span // 3, self._buffer_start + 2 * span // 3))
                    continue
            committed.append(self._commit(hyp.words[j:], hyp.ends_s[j:]))
            if hyp.temperature > 0.5:  # as whisper does: a text that needed high temperature
                self._prompt_start = len(self.committed_words)  # never prompts what follows
            if forced:
                self._finish_piece(end - self._buffer_start)
            elif seek is not None and seek > 0:
                self._finish_piece(seek)
            else:
                self._finish_piece(span if last_piece else hyp.span)
                if last_piece:
                    targets.pop()
        return " ".join(c for c in committed if c)
