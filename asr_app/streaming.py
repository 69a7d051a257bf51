"""Streaming transcription: a clock-free state machine over Whisper's 30-second decoder.

    stream = StreamingTranscriber(bundle)
    stream.insert_audio(chunk)          # any size, float32 16 kHz
    update = stream.process()           # at most one decode; None when there was nothing to do
    ... update.committed (new stable text), update.tentative (current unstable tail)
    final = stream.finish()

Policy (whisper_streaming's LocalAgreement-2, Macháček et al. 2023, plus VAD gating):
- Audio accumulates in a buffer. Every `min_chunk_s` of new speech, the buffer is decoded
  with the text committed before it as the decoder prompt. Words on which the last two
  hypotheses agree (longest common prefix, after the words already committed from this
  buffer) are committed; the rest is shown as tentative.
- silero-vad runs on every 32 ms frame as audio arrives. Silence never triggers a decode.
  Where speech is followed by `phrase_end_silence_ms` of silence a phrase ends: the buffer
  up to there is decoded once more, all of it committed, and the buffer cut there. Phrase
  ends are found as audio arrives, so a lagging processor still finalizes phrase by phrase.
- The buffer is trimmed at the end of the last Whisper segment whose words are all
  committed once it grows past `max_buffer_s`, so work per update stays bounded.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np

from asr_app.audio import HOP_LENGTH, SAMPLE_RATE_HZ, SECONDS_PER_TOKEN, log_mel_window
from asr_app.decoding import DecodingOptions, WindowDecoder

VAD_FRAME = 512  # samples, 32 ms
MIN_DECODE_SAMPLES = SAMPLE_RATE_HZ // 10  # 0.1 s


@dataclass(frozen=True)
class StreamingOptions:
    """Streaming policy settings.

    Attributes:
        min_chunk_s: new audio needed before another decode of the buffer, seconds.
        phrase_end_silence_ms: silence after speech that ends a phrase (commit everything).
        max_buffer_s: trim the buffer at a committed segment end beyond this, seconds
            (must stay under Whisper's 30 s window).
        vad_threshold: silero-vad speech probability threshold.
        prompt_words: committed words before the buffer given as the decoder prompt.
        decoding: DecodingOptions of the end-of-phrase decode; intermediate decodes use only
            its first temperature (their unfinished words would trigger needless fallbacks).
    Raises:
        ValueError: out-of-range values, naming the field.
    """

    min_chunk_s: float = 2.0
    phrase_end_silence_ms: int = 400
    max_buffer_s: float = 20.0
    vad_threshold: float = 0.5
    prompt_words: int = 40
    decoding: DecodingOptions = dataclasses.field(default_factory=DecodingOptions)

    def __post_init__(self):
        if not 0.1 <= self.min_chunk_s <= 10:
            raise ValueError(f"min_chunk_s must be in [0.1, 10], got {self.min_chunk_s}")
        if not 5 <= self.max_buffer_s <= 28:
            raise ValueError(f"max_buffer_s must be in [5, 28], got {self.max_buffer_s}")
        if self.phrase_end_silence_ms < 100:
            raise ValueError(f"phrase_end_silence_ms must be >= 100, got {self.phrase_end_silence_ms}")


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
    start_s: float
    end_s: float | None
    words: list[str]

    def word_ends_s(self, buffer_end_s: float) -> list[float]:
        """End time of each word, buffer-relative, spread over the segment by characters."""
        end = self.end_s if self.end_s is not None else buffer_end_s
        total = sum(len(w) + 1 for w in self.words)
        out, acc = [], 0
        for w in self.words:
            acc += len(w) + 1
            out.append(self.start_s + (end - self.start_s) * acc / total)
        return out


_PUNCT = re.compile(r"[^\w']+")


def _key(word: str) -> str:
    return _PUNCT.sub("", word.lower())


class StreamingTranscriber:
    """LocalAgreement-2 streaming over a WindowDecoder (see module docstring).

    Args:
        bundle: a loaded WhisperBundle.
        options: StreamingOptions.
    """

    def __init__(self, bundle, options: StreamingOptions = StreamingOptions()):
        from silero_vad import load_silero_vad

        self.bundle = bundle
        self.options = options
        self.final_decoder = WindowDecoder(bundle, options.decoding)
        self.decoder = WindowDecoder(bundle, dataclasses.replace(options.decoding,
                                                                 temperatures=options.decoding.temperatures[:1]))
        self.vad = load_silero_vad()  # its own instance: silero keeps streaming state
        self._silence_samples = int(options.phrase_end_silence_ms / 1000 * SAMPLE_RATE_HZ)
        self.committed_words: list[str] = []
        self.committed_ends_s: list[float] = []  # approximate audio end time of each committed word
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # sample index of the buffer's first sample
        self._total = 0  # samples inserted
        self._vad_pending = np.zeros(0, np.float32)
        self._vad_pos = 0  # samples run through the VAD
        self._last_speech_end: int | None = None  # sample index
        self._in_phrase = False  # speech seen and no phrase-ending silence since
        self._phrase_ends: list[int] = []  # sample indices where finished phrases end
        self._decoded_upto = 0  # sample index of the buffer end at the last decode
        self._committed_in_buffer = 0  # words of the buffer's hypothesis already committed
        self._previous: list[str] | None = None  # last hypothesis (words of the buffer)
        self._tentative: list[str] = []

    # -- input ------------------------------------------------------------------------------
    def insert_audio(self, chunk: np.ndarray) -> None:
        """Append (samples,) float32 16 kHz audio and run the VAD over it."""
        import torch

        chunk = np.asarray(chunk, np.float32).reshape(-1)
        self._buffer = np.concatenate([self._buffer, chunk])
        self._total += len(chunk)
        self._vad_pending = np.concatenate([self._vad_pending, chunk])
        while len(self._vad_pending) >= VAD_FRAME:
            frame, self._vad_pending = self._vad_pending[:VAD_FRAME], self._vad_pending[VAD_FRAME:]
            with torch.no_grad():
                prob = float(self.vad(torch.from_numpy(frame), SAMPLE_RATE_HZ))
            self._vad_pos += VAD_FRAME
            if prob >= self.options.vad_threshold:
                self._last_speech_end = self._vad_pos
                self._in_phrase = True
            elif self._in_phrase and (self._vad_pos - self._last_speech_end) >= self._silence_samples:
                # a phrase ended: remember where (with a little padding), decode it later
                self._phrase_ends.append(self._last_speech_end + int(0.2 * SAMPLE_RATE_HZ))
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
        """Do at most one decode if the policy calls for it; None when nothing was due.

        A finished phrase (even one followed by more speech already, when processing lags)
        is decoded and committed first; otherwise, during speech, the buffer is re-decoded
        once `min_chunk_s` of new audio has arrived.
        """
        if self._phrase_ends:
            return self._end_phrase(self._phrase_ends.pop(0))
        if not self._in_phrase:
            self._drop_silence()
            return None
        if (self._total - self._decoded_upto) / SAMPLE_RATE_HZ < self.options.min_chunk_s:
            return None
        return self._update()

    def finish(self) -> StreamUpdate:
        """End of input: commit everything still in the buffer."""
        if self._phrase_ends:
            update = self._end_phrase(self._phrase_ends.pop(0))
            rest = self.finish()
            return StreamUpdate(" ".join(x for x in (update.committed, rest.committed) if x), "",
                                self.audio_s, phrase_ended=True, decoded=True)
        if self._in_phrase:
            self._in_phrase = False
            return self._end_phrase(self._total)
        return StreamUpdate("", "", self.audio_s, phrase_ended=True)

    def _drop_silence(self) -> None:
        keep = int(0.5 * SAMPLE_RATE_HZ)  # keep a little lead-in for the next word
        if len(self._buffer) > 2 * keep:
            cut = len(self._buffer) - keep
            self._buffer = self._buffer[cut:]
            self._buffer_start += cut
            self._decoded_upto = self._total

    def _window(self, end: int | None = None) -> tuple[int, int]:
        """[lo, hi) buffer indices decoded: the last 30 s before sample index `end` (default: all)."""
        hi = len(self._buffer) if end is None else min(max(0, end - self._buffer_start), len(self._buffer))
        return max(0, hi - 30 * SAMPLE_RATE_HZ), hi

    def _hypothesis(self, final: bool = False, end: int | None = None) -> list[_Segment]:
        """Decode the buffer (up to sample index `end`) with the committed text before it as prompt."""
        tok = self.bundle.tokenizer
        before = self.committed_words[: len(self.committed_words) - self._committed_in_buffer]
        prompt = tok.encode(" " + " ".join(before[-self.options.prompt_words :]), add_special_tokens=False) if before else None
        lo, hi = self._window(end)
        audio = self._buffer[lo:hi]
        if len(audio) < MIN_DECODE_SAMPLES:  # nothing to hear: Whisper would only invent text
            return []
        mel = log_mel_window(self.bundle.feature_extractor, audio)
        result = (self.final_decoder if final else self.decoder).decode(mel, prompt)
        self._decoded_upto = self._total
        d = self.options.decoding
        if (d.no_speech_threshold is not None and result.no_speech_prob > d.no_speech_threshold
                and (d.logprob_threshold is None or result.avg_logprob < d.logprob_threshold)):
            return []
        return self._segments(result.tokens)

    def _segments(self, tokens: list[int]) -> list[_Segment]:
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

    def _words_and_ends(self, segments: list[_Segment], end: int | None = None) -> tuple[list[str], list[float]]:
        lo, hi = self._window(end)
        buffer_s = (hi - lo) / SAMPLE_RATE_HZ
        offset_s = (self._buffer_start + lo) / SAMPLE_RATE_HZ
        words, ends = [], []
        for seg in segments:
            words += seg.words
            ends += [offset_s + e for e in seg.word_ends_s(buffer_s)]
        return words, ends

    def _commit(self, words: list[str], ends: list[float]) -> str:
        self.committed_words += words
        self.committed_ends_s += ends
        self._committed_in_buffer += len(words)
        return " ".join(words)

    def _update(self) -> StreamUpdate:
        segments = self._hypothesis()
        words, ends = self._words_and_ends(segments)
        k = self._committed_in_buffer
        new = words[k:]
        n_agreed = 0
        if self._previous is not None:
            for a, b in zip(self._previous[k:], new):
                if _key(a) != _key(b):
                    break
                n_agreed += 1
        committed = [self._commit(new[:n_agreed], ends[k : k + n_agreed])] if n_agreed else []
        self._previous = words
        forced = self._trim(segments, words, ends)
        if forced:
            committed.append(forced)
        n_forced = len(forced.split()) if forced else 0
        self._tentative = new[n_agreed + n_forced :]
        return StreamUpdate(" ".join(c for c in committed if c), " ".join(self._tentative), self.audio_s, decoded=True)

    def _end_phrase(self, end: int) -> StreamUpdate:
        """Decode the buffer up to sample `end` (a phrase end), commit all of it, cut there."""
        segments = self._hypothesis(final=True, end=end)
        words, ends = self._words_and_ends(segments, end)
        k = self._committed_in_buffer
        committed = self._commit(words[k:], ends[k:])
        cut = min(max(0, end - self._buffer_start), len(self._buffer))
        self._buffer = self._buffer[cut:]
        self._buffer_start += cut
        self._committed_in_buffer = 0
        self._previous = None
        self._tentative = []
        return StreamUpdate(committed, "", self.audio_s, phrase_ended=True, decoded=True,
                            phrase_end_s=end / SAMPLE_RATE_HZ)

    def _trim(self, segments: list[_Segment], words: list[str], ends: list[float]) -> str:
        """Cut the buffer at the end of the last fully committed segment once it is too long.

        If no segment is fully committed yet, the first segment is committed (forced) so the
        buffer can move on; returns the text so committed ("" otherwise).
        """
        if len(self._buffer) / SAMPLE_RATE_HZ <= self.options.max_buffer_s:
            return ""
        n_words, cut_s, cut_words = 0, None, 0
        for seg in segments:
            n_words += len(seg.words)
            if seg.end_s is not None and n_words <= self._committed_in_buffer:
                cut_s, cut_words = seg.end_s, n_words
        forced = ""
        if cut_s is None:
            if not segments or segments[0].end_s is None:
                return ""
            first = len(segments[0].words)
            k = self._committed_in_buffer
            forced = self._commit(words[k:first], ends[k:first])
            cut_s, cut_words = segments[0].end_s, first
        offset, _ = self._window()
        cut = min(offset + int(cut_s * SAMPLE_RATE_HZ) // HOP_LENGTH * HOP_LENGTH, len(self._buffer))
        self._buffer = self._buffer[cut:]
        self._buffer_start += cut
        self._committed_in_buffer = max(0, self._committed_in_buffer - cut_words)
        if self._previous is not None:
            self._previous = self._previous[cut_words:]
        return forced
