"""Clock-free take recorder: feed audio chunks, it says when the take is over.

A take ends after `trailing_silence_ms` of silence following speech (silero-vad, streamed
frame by frame), at `max_take_s` (marked cut off if speech was still going), or when no
speech starts within `max_wait_s`. Tested by replaying files in fixed chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from asr_app.audio import SAMPLE_RATE_HZ, rms_dbfs

VAD_FRAME_SAMPLES = 512  # 32 ms: silero-vad's frame at 16 kHz


class TakeState(Enum):
    """Where a take is: waiting for speech, speech heard, or ended by trailing silence."""

    WAITING = "waiting"  # no speech yet
    SPEAKING = "speaking"
    DONE = "done"


@dataclass(frozen=True)
class RecorderOptions:
    """When a take starts and stops.

    Attributes:
        speech_threshold: silero-vad probability above which a 32 ms frame is speech.
        trailing_silence_ms: silence after speech that ends the take.
        pre_roll_ms: audio kept from before speech began.
        post_roll_ms: silence kept after speech ended.
        max_take_s: longest take (Whisper's window is 30 s).
        max_wait_s: give up when no speech starts within this.
    """

    speech_threshold: float = 0.5
    trailing_silence_ms: int = 900
    pre_roll_ms: int = 400
    post_roll_ms: int = 400
    max_take_s: float = 30.0
    max_wait_s: float = 15.0

    def __post_init__(self):
        if not 0 < self.speech_threshold < 1:
            raise ValueError(f"speech_threshold must be in (0, 1), got {self.speech_threshold}")
        if self.max_take_s <= 1 or self.max_wait_s <= 0:
            raise ValueError("max_take_s must be > 1 and max_wait_s > 0")


class TakeRecorder:
    """Accumulates one take from streamed audio.

    Usage: `insert_audio(chunk)` any number of times (any chunk size, float32 16 kHz),
    read `state`; once DONE, `audio()` is the take and `cut_off` says whether it hit
    `max_take_s` mid-speech. `stop()` ends the take at once (a key press).
    """

    def __init__(self, options: RecorderOptions = RecorderOptions()):
        from asr_app.vad import SileroVad

        self.options = options
        self.vad = SileroVad()
        self.state = TakeState.WAITING
        self.cut_off = False
        self.timed_out = False
        self.level_dbfs = -100.0
        self._frames: list[np.ndarray] = []  # 512-sample frames
        self._pending = np.zeros(0, np.float32)
        self._speech_start: int | None = None  # frame index
        self._last_speech: int | None = None

    @property
    def duration_s(self) -> float:
        return len(self._frames) * VAD_FRAME_SAMPLES / SAMPLE_RATE_HZ

    def insert_audio(self, chunk: np.ndarray) -> TakeState:
        """Add (samples,) float32 16 kHz audio; returns the state after it."""
        if self.state is TakeState.DONE:
            return self.state
        chunk = np.asarray(chunk, np.float32).reshape(-1)
        if len(chunk):
            self.level_dbfs = rms_dbfs(chunk)
        self._pending = np.concatenate([self._pending, chunk])
        n_frames = len(self._pending) // VAD_FRAME_SAMPLES
        frames = self._pending[: n_frames * VAD_FRAME_SAMPLES].reshape(-1, VAD_FRAME_SAMPLES)
        self._pending = self._pending[n_frames * VAD_FRAME_SAMPLES :]
        for frame, prob in zip(frames, self.vad.probabilities(frames.reshape(-1))):
            if self.state is TakeState.DONE:  # what follows the take's end belongs to no take
                break
            self._process_frame(frame, float(prob))
        return self.state

    def _process_frame(self, frame: np.ndarray, prob: float) -> None:
        o = self.options
        i = len(self._frames)
        self._frames.append(frame)
        if prob >= o.speech_threshold:
            if self._speech_start is None:
                self._speech_start = i
            self._last_speech = i
            self.state = TakeState.SPEAKING
        frame_s = VAD_FRAME_SAMPLES / SAMPLE_RATE_HZ
        if self.state is TakeState.WAITING:
            if (i + 1) * frame_s >= o.max_wait_s:
                self.timed_out = True
                self.state = TakeState.DONE
            return
        silent_s = (i - self._last_speech) * frame_s
        if silent_s * 1000 >= o.trailing_silence_ms:
            self.state = TakeState.DONE
        elif (i + 1 - self._first_kept()) * frame_s >= o.max_take_s:
            self.cut_off = silent_s < 0.2
            self.state = TakeState.DONE

    def _first_kept(self) -> int:
        if self._speech_start is None:
            return 0
        pre = round(self.options.pre_roll_ms / 1000 * SAMPLE_RATE_HZ / VAD_FRAME_SAMPLES)
        return max(0, self._speech_start - pre)

    def stop(self) -> None:
        """End the take now (the user pressed stop)."""
        if self._pending.size:
            self._frames.append(self._pending)
            self._pending = np.zeros(0, np.float32)
        self.state = TakeState.DONE

    @property
    def heard_speech(self) -> bool:
        return self._speech_start is not None

    def audio(self) -> np.ndarray:
        """The take: pre-roll + speech + post-roll, (samples,) float32 16 kHz."""
        if not self._frames:
            return np.zeros(0, np.float32)
        if self._speech_start is None:
            return np.concatenate(self._frames)
        post = round(self.options.post_roll_ms / 1000 * SAMPLE_RATE_HZ / VAD_FRAME_SAMPLES)
        end = min(len(self._frames), self._last_speech + 1 + post)
        return np.concatenate(self._frames[self._first_kept() : end])
