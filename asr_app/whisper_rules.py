"""Whisper's decoding rules, as openai-whisper applies them (`decoding.py`, `transcribe()`):
the masks on next-token logits (suppressed tokens, blank start, timestamp rules), the
log-softmax they feed, the compression-ratio check of fallback decoding, and the split of
a window's tokens into timed segments with the seek to the next window.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import numpy as np

from asr_app.audio import FRAMES_PER_SECOND, N_FRAMES, N_TIMESTAMPS, SECONDS_PER_TOKEN

if TYPE_CHECKING:
    from asr_app.decoding_options import DecodingOptions

NEG_INF = float("-inf")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log_softmax over the last axis (float32; -inf entries stay -inf)."""
    m = logits.max(axis=-1, keepdims=True)
    shifted = logits - m
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def compression_ratio(text: str) -> float:
    """len(utf-8 bytes) / len(zlib-compressed bytes); high values mean repetition loops."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


class TokenFilter:
    """Masks applied to next-token logits: suppressed tokens, blank start, timestamp rules.

    Args:
        special: the model's SpecialTokens.
        suppress_tokens: ids never to sample (non-speech symbols and task tokens).
        sample_begin: index in the token sequence of the first sampled token.
        options: DecodingOptions.
    Source: openai-whisper `SuppressBlank`, `SuppressTokens`, `ApplyTimestampRules`.
    """

    def __init__(
        self, special, suppress_tokens: list[int], blank_ids: list[int], sample_begin: int, options: DecodingOptions
    ):
        self.special = special
        self.suppress = np.array(sorted(set(suppress_tokens)), dtype=np.int64)
        self.blank = np.array(blank_ids, dtype=np.int64)
        self.sample_begin = sample_begin
        self.options = options
        self.max_initial_ts_index = round(options.max_initial_timestamp_s / SECONDS_PER_TOKEN)

    def __call__(self, logits: np.ndarray, tokens: list[list[int]]) -> np.ndarray:
        """logits: (beams, vocab) float32, modified in place and returned."""
        n = len(tokens[0])
        if self.options.suppress_blank and n == self.sample_begin:
            logits[:, self.blank] = NEG_INF
        logits[:, self.suppress] = NEG_INF
        if not self.options.without_timestamps:
            self._timestamp_rules(logits, tokens)
        return logits

    def _timestamp_rules(self, logits: np.ndarray, tokens: list[list[int]]):
        ts = self.special.timestamp_begin
        eot = self.special.eot
        logits[:, self.special.no_timestamps] = NEG_INF
        for k, seq in enumerate(tokens):
            sampled = seq[self.sample_begin :]
            last_ts = len(sampled) >= 1 and sampled[-1] >= ts
            penultimate_ts = len(sampled) < 2 or sampled[-2] >= ts
            if last_ts:
                if penultimate_ts:  # a pair closed: text must follow
                    logits[k, ts:] = NEG_INF
                else:  # an open timestamp: the next is a timestamp or end-of-text
                    logits[k, :eot] = NEG_INF
            stamps = [t for t in sampled if t >= ts]
            if stamps:
                # timestamps never decrease; a closing one may equal its opener
                floor = stamps[-1] if last_ts and not penultimate_ts else stamps[-1] + 1
                logits[k, ts:floor] = NEG_INF
        if len(tokens[0]) == self.sample_begin:
            logits[:, :ts] = NEG_INF  # the first sampled token is a timestamp
            logits[:, ts + self.max_initial_ts_index + 1 :] = NEG_INF
        # take a timestamp whenever all timestamps together outweigh the best text token
        logprobs = log_softmax(logits)
        with np.errstate(divide="ignore"):
            ts_logprob = np.log(np.exp(logprobs[:, ts:]).sum(axis=-1))
        text_max = logprobs[:, :ts].max(axis=-1)
        logits[ts_logprob > text_max, :ts] = NEG_INF


def tokens_to_segments(
    tokens: list[int], timestamp_begin: int, time_offset_s: float, segment_frames: int
) -> tuple[list[tuple[float, float, list[int]]], int]:
    """Split one window's tokens into segments at timestamp pairs, and say how far to seek.

    Args:
        tokens: sampled tokens of one window (no prompt, no end-of-text).
        timestamp_begin: id of `<|0.00|>`.
        time_offset_s: the window's start in the audio, seconds.
        segment_frames: log-mel frames of real audio in this window (<= 3000).
    Returns:
        (segments, seek_frames): segments as (start_s, end_s, text_tokens) in absolute
        seconds; the number of frames to advance. When the window ends inside an unfinished
        segment, that segment is dropped and the seek stops at its opening timestamp, so the
        next window decodes it whole: no text is lost or repeated at window boundaries.
    Source: openai-whisper `transcribe()` (consecutive-timestamp slicing).
    """
    frames_per_token = N_FRAMES // N_TIMESTAMPS  # 3000 frames / 1500 timestamp positions
    is_ts = [t >= timestamp_begin for t in tokens]
    single_ending = len(tokens) >= 2 and is_ts[-2:] == [False, True]
    cuts = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    segments = []
    if cuts:
        if single_ending:
            cuts.append(len(tokens))
        last = 0
        for cut in cuts:
            piece = tokens[last:cut]
            start = (piece[0] - timestamp_begin) * SECONDS_PER_TOKEN
            end = (piece[-1] - timestamp_begin) * SECONDS_PER_TOKEN
            segments.append((time_offset_s + start, time_offset_s + end, [t for t in piece if t < timestamp_begin]))
            last = cut
        if single_ending:
            seek = segment_frames
        else:
            seek = (tokens[last - 1] - timestamp_begin) * frames_per_token
    else:
        duration = segment_frames / FRAMES_PER_SECOND
        stamps = [t for t in tokens if t >= timestamp_begin]
        if stamps and stamps[-1] != timestamp_begin:
            duration = (stamps[-1] - timestamp_begin) * SECONDS_PER_TOKEN
        start = (stamps[0] - timestamp_begin) * SECONDS_PER_TOKEN if stamps else 0.0
        segments.append((time_offset_s + start, time_offset_s + duration, [t for t in tokens if t < timestamp_begin]))
        seek = segment_frames
    return [s for s in segments if s[2]], max(seek, 1)
