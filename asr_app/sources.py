"""Audio input behind one small interface: the microphone (asr_app.tui.microphone) or a file.

A source yields float32 16 kHz mono chunks; `read` returns None when the input has ended.
"""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np

from asr_app.audio import SAMPLE_RATE_HZ, load_audio

CHUNK_SAMPLES = 512  # 32 ms


class AudioSource(Protocol):
    """What the enrollment session and live transcription read from."""

    name: str

    def start(self) -> None: ...
    def read(self, timeout_s: float = 0.5) -> np.ndarray | None:
        """Next chunk (samples,) float32 16 kHz; empty if none arrived in time; None at the end."""

    def close(self) -> None: ...


class FileSource:
    """Plays a file as if it were the microphone, in real time or `speed` times faster.

    Args:
        path: any file `load_audio` reads.
        speed: 1.0 is real time, 4.0 four times faster, 0 as fast as possible.
    Raises:
        AudioError: the file cannot be read.
    """

    def __init__(self, path, speed: float = 1.0, chunk_samples: int = CHUNK_SAMPLES):
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self.name = f"file:{path}"
        self.audio = load_audio(path)
        self.speed = speed
        self.chunk_samples = chunk_samples
        self.pos = 0
        self._t0: float | None = None

    def start(self) -> None:
        self._t0 = time.monotonic()

    def read(self, timeout_s: float = 0.5) -> np.ndarray | None:
        if self.pos >= len(self.audio):
            return None
        if self._t0 is None:
            self.start()
        if self.speed > 0:  # pace the file like a live input
            due = self._t0 + (self.pos + self.chunk_samples) / SAMPLE_RATE_HZ / self.speed
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, timeout_s))
                if time.monotonic() < due:
                    return np.zeros(0, np.float32)
        chunk = self.audio[self.pos : self.pos + self.chunk_samples]
        self.pos += len(chunk)
        return chunk

    @property
    def position_s(self) -> float:
        return self.pos / SAMPLE_RATE_HZ

    def close(self) -> None:
        self.pos = len(self.audio)


class QueueSource:
    """Audio pushed by a program: `push(audio)` queues it, `end()` closes the input.

    For scripted sessions and tests that decide when each recording arrives.
    """

    def __init__(self, name: str = "queue", chunk_samples: int = CHUNK_SAMPLES):
        import queue

        self.name = name
        self.chunk_samples = chunk_samples
        self._queue: queue.Queue = queue.Queue()
        self._ended = False

    def push(self, audio: np.ndarray) -> None:
        audio = np.asarray(audio, np.float32)
        for i in range(0, len(audio), self.chunk_samples):
            self._queue.put(audio[i : i + self.chunk_samples])

    def end(self) -> None:
        self._queue.put(None)

    def start(self) -> None:
        pass

    def read(self, timeout_s: float = 0.5) -> np.ndarray | None:
        import queue

        if self._ended:
            return None
        try:
            chunk = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return np.zeros(0, np.float32)
        if chunk is None:
            self._ended = True
        return chunk

    def close(self) -> None:
        self._ended = True
