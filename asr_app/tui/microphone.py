"""Microphone input and playback through sounddevice (PortAudio)."""

from __future__ import annotations

import queue

import numpy as np

from asr_app.audio import SAMPLE_RATE_HZ
from asr_app.errors import AsrAppError
from asr_app.sources import CHUNK_SAMPLES


class AudioDeviceError(AsrAppError):
    """No PortAudio library, no microphone, or the device cannot be opened."""


def _sounddevice():
    try:
        import sounddevice as sd
    except OSError:  # sounddevice raises OSError when libportaudio is missing
        raise AudioDeviceError(
            "the PortAudio library is missing: install it (Debian/Ubuntu: sudo apt-get install libportaudio2; "
            "macOS: brew install portaudio), or use --input FILE"
        ) from None
    except ImportError:
        raise AudioDeviceError("sounddevice is not installed: pip install sounddevice, or use --input FILE") from None
    return sd


class MicrophoneSource:
    """The default input device at 16 kHz mono (PortAudio resamples when needed).

    Raises:
        AudioDeviceError: from `start`, with the fix, when no microphone can be opened.
    """

    def __init__(self, device: int | str | None = None):
        self.name = "mic"
        self.device = device
        self._queue: queue.Queue[np.ndarray] = queue.Queue()
        self._stream = None

    def start(self) -> None:
        sd = _sounddevice()
        try:
            sd.check_input_settings(device=self.device, channels=1, samplerate=SAMPLE_RATE_HZ, dtype="float32")
            self._stream = sd.InputStream(
                device=self.device,
                channels=1,
                samplerate=SAMPLE_RATE_HZ,
                dtype="float32",
                blocksize=CHUNK_SAMPLES,
                callback=self._callback,
            )
            self._stream.start()
        except Exception as e:  # PortAudioError, ValueError for a missing device
            raise AudioDeviceError(
                f"no usable microphone ({e}): connect one and check the system's input settings, or use --input FILE"
            ) from None

    def _callback(self, indata, frames, time_info, status) -> None:
        self._queue.put(indata[:, 0].copy())

    def read(self, timeout_s: float = 0.5) -> np.ndarray | None:
        try:
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return np.zeros(0, np.float32)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None


def play(audio: np.ndarray) -> None:
    """Play (samples,) float32 16 kHz audio on the default output; returns at once.

    Raises:
        AudioDeviceError: no output device or PortAudio.
    """
    sd = _sounddevice()
    try:
        sd.play(audio, SAMPLE_RATE_HZ)
    except Exception as e:
        raise AudioDeviceError(f"cannot play audio ({e})") from None
