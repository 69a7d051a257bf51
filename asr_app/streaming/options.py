"""Streaming policy settings (`StreamingOptions`), the update a step returns (`StreamUpdate`)
and the policy's fixed constants."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from asr_app.audio import SAMPLE_RATE_HZ
from asr_app.decoding import DecodingOptions

MIN_DECODE_SAMPLES = SAMPLE_RATE_HZ // 10  # 0.1 s
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
        phrase_end_pad_ms: audio kept after a phrase's last VAD speech frame when it is
            finalized (silero-vad's speech probability falls before a word's last sound
            fades: a short pad turns "peas" into "peace"); no more than
            `phrase_end_silence_ms` is kept, so it never reaches into the next phrase.
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
    phrase_end_pad_ms: int = 400
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
        if self.phrase_end_pad_ms < 0:
            raise ValueError(f"phrase_end_pad_ms must be >= 0, got {self.phrase_end_pad_ms}")
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
        phrase_end_s: with phrase_ended, where the phrase's speech ended in the audio (the
            end of its last VAD speech frame; the span finalized goes on for the pad), seconds.
    """

    committed: str
    tentative: str
    audio_end_s: float
    phrase_ended: bool = False
    decoded: bool = False
    phrase_end_s: float | None = None
