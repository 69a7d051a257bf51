"""The streaming transcriber: LocalAgreement over a rolling buffer with VAD phrase ends (see
the package docstring for the policy)."""

from __future__ import annotations

import dataclasses

import numpy as np

from asr_app.audio import HOP_LENGTH, N_SAMPLES, SAMPLE_RATE_HZ, SECONDS_PER_TOKEN, log_mel_window
from asr_app.decoding import WindowDecoder
from asr_app.streaming.hypothesis import _Hypothesis, _key, _Segment, _to_hop, skip_committed
from asr_app.streaming.incremental import IncrementalEncoder
from asr_app.streaming.options import (
    CONTEXT_GAP_S,
    LEAD_IN_SAMPLES,
    MAX_FINAL_DECODES,
    MIN_DECODE_SAMPLES,
    MIN_SPLIT_SPEECH_S,
    MIN_WORDS_PER_SPEECH_S,
    UNCOVERED_S,
    StreamingOptions,
    StreamUpdate,
)
from asr_app.vad import FRAME_SAMPLES, SileroVad


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
        self.decoder = WindowDecoder(
            bundle, dataclasses.replace(options.decoding, temperatures=options.decoding.temperatures[:1])
        )
        # a CALD model (torch) keeps the buffer's encoding up to date as audio arrives
        self._incremental = IncrementalEncoder.for_runner(bundle, self.decoder.runner)
        self.vad = SileroVad()  # its own stream state
        self._exit_threshold = max(options.vad_threshold - 0.15, 0.01)
        self._silence_samples = int(options.phrase_end_silence_ms / 1000 * SAMPLE_RATE_HZ)
        pad_ms = min(options.phrase_end_pad_ms, options.phrase_end_silence_ms)
        self._pad_samples = int(pad_ms / 1000 * SAMPLE_RATE_HZ)
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
        if self._incremental is not None:
            self._incremental.push(chunk)
        for prob in self.vad.probabilities(chunk).tolist():
            frame_end = (self._probs_start + len(self._probs) + 1) * FRAME_SAMPLES
            self._probs.append(prob)
            if prob >= self.options.vad_threshold or (self._in_phrase and prob >= self._exit_threshold):
                self._last_speech_end = frame_end
                self._in_phrase = True
            elif (
                self._in_phrase
                and self._last_speech_end is not None
                and frame_end - self._last_speech_end >= self._silence_samples
            ):
                # a phrase ended: remember where (with the pad), finalize it later
                self._phrase_ends.append(self._last_speech_end + self._pad_samples)
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
        return StreamUpdate(
            " ".join(c for c in committed if c), "", self.audio_s, phrase_ended=True, decoded=bool(committed)
        )

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
        return skip_committed(self._buffer_words, hyp.words) < len(hyp.words) or not self._speech_between(
            self._piece_start, self._buffer_start + hyp.span
        )

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
        if self._incremental is not None and n:
            self._incremental.invalidate()  # reset from the buffer when next read
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
        prompt = (
            tok.encode(" " + " ".join(before[-self.options.prompt_words :]), add_special_tokens=False)
            if before
            else None
        )
        if span < MIN_DECODE_SAMPLES:  # nothing to hear: Whisper would only invent text
            return _Hypothesis([], [], [], span)
        decoder = self.final_decoder if final else self.decoder
        if self._incremental is not None and span == len(self._buffer):
            if self._incremental.stale:
                self._incremental.reset(self._buffer)
            result = decoder.decode_features(self._incremental.features(), prompt)
        else:
            mel = log_mel_window(self.bundle.feature_extractor, self._buffer[:span])
            result = decoder.decode(mel, prompt, span // HOP_LENGTH)
        self._decoded_upto = self._total
        d = self.options.decoding
        if (
            d.no_speech_threshold is not None
            and result.no_speech_prob > d.no_speech_threshold
            and (d.logprob_threshold is None or result.avg_logprob < d.logprob_threshold)
        ):
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
        start, text = 0.0, []  # type: float, list[int]
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
        """Finalize the buffer up to sample index `end` (a phrase's speech end plus the pad):
        commit all of it."""
        committed = self._finalize(end)
        return StreamUpdate(
            committed,
            "",
            self.audio_s,
            phrase_ended=True,
            decoded=True,
            phrase_end_s=(end - self._pad_samples) / SAMPLE_RATE_HZ,
        )

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
        cut = self._quietest(
            buffer_end - int(self.options.cut_search_s * SAMPLE_RATE_HZ), buffer_end - SAMPLE_RATE_HZ // 4
        )  # 0.25 s guard against the newest audio
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
                if not last_piece or (
                    hyp.span - closed_at > UNCOVERED_S * SAMPLE_RATE_HZ
                    and self._speech_between(self._buffer_start + closed_at, self._buffer_start + span)
                ):
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
