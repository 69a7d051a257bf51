"""Voice activity detection with silero-vad (its model ships in the PyPI package).

Speech chunks are transcribed as one stitched stream, as faster-whisper does, so silence
and noise never reach the decoder; timestamps are mapped back to the original audio.
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass

import numpy as np

from asr_app.audio import SAMPLE_RATE_HZ


@dataclass(frozen=True)
class VadOptions:
    """silero-vad settings (faster-whisper's defaults).

    Attributes:
        threshold: speech probability above which a 32 ms frame is speech.
        min_speech_ms: shorter speech bursts are dropped.
        min_silence_ms: silences shorter than this do not split speech.
        speech_pad_ms: padding added on both sides of each chunk.
    """

    threshold: float = 0.5
    min_speech_ms: int = 250
    min_silence_ms: int = 2000
    speech_pad_ms: int = 400

    def __post_init__(self):
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        for name in ("min_speech_ms", "min_silence_ms", "speech_pad_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@functools.lru_cache(maxsize=1)
def _silero_model():
    from silero_vad import load_silero_vad

    return load_silero_vad()


def speech_chunks(audio: np.ndarray, options: VadOptions = VadOptions()) -> list[tuple[int, int]]:
    """Speech regions of 16 kHz audio.

    Args:
        audio: (samples,) float32, 16 kHz.
    Returns:
        Sorted, non-overlapping [start, end) sample ranges.
    Source: silero-vad `get_speech_timestamps`.
    """
    import torch
    from silero_vad import get_speech_timestamps

    stamps = get_speech_timestamps(
        torch.from_numpy(audio),
        _silero_model(),
        threshold=options.threshold,
        sampling_rate=SAMPLE_RATE_HZ,
        min_speech_duration_ms=options.min_speech_ms,
        min_silence_duration_ms=options.min_silence_ms,
        speech_pad_ms=options.speech_pad_ms,
    )
    return [(int(s["start"]), int(s["end"])) for s in stamps]


class SpeechView:
    """The speech chunks of an audio signal seen as one contiguous signal, without copying.

    Args:
        audio: (samples,) float32.
        chunks: [start, end) sample ranges in `audio`, or None for all of it.
    """

    def __init__(self, audio: np.ndarray, chunks: list[tuple[int, int]] | None = None):
        self.audio = audio
        self.chunks = chunks if chunks is not None else [(0, len(audio))]
        self.offsets = [0]  # start of each chunk in the stitched signal
        for s, e in self.chunks:
            self.offsets.append(self.offsets[-1] + (e - s))

    def __len__(self) -> int:
        return self.offsets[-1]

    def slice(self, start: int, end: int) -> np.ndarray:
        """Samples [start, end) of the stitched signal, (end - start,) float32."""
        end = min(end, len(self))
        parts = []
        i = max(bisect.bisect_right(self.offsets, start) - 1, 0)
        pos = start
        while pos < end and i < len(self.chunks):
            s, e = self.chunks[i]
            lo = s + (pos - self.offsets[i])
            hi = min(e, s + (end - self.offsets[i]))
            if hi > lo:
                parts.append(self.audio[lo:hi])
                pos += hi - lo
            i += 1
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def to_original_s(self, t_s: float, is_end: bool = False) -> float:
        """Map a time in the stitched signal (seconds) to the original audio (seconds)."""
        sample = t_s * SAMPLE_RATE_HZ
        if not self.chunks:
            return t_s
        search = bisect.bisect_left if is_end else bisect.bisect_right
        i = min(max(search(self.offsets, sample) - 1, 0), len(self.chunks) - 1)
        return (self.chunks[i][0] + sample - self.offsets[i]) / SAMPLE_RATE_HZ
