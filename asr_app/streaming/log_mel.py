"""Whisper's log-mel computed as audio arrives, with a normalisation that never looks ahead.

Whisper normalises a window's log-mel by its loudest frame (each value clamped to that
maximum less 8, i.e. 80 dB, then scaled (x + 4) / 4), so a frame's value depends on audio
after it. Live, a frame is final once its 25-ms analysis window has arrived, and it is
normalised by the running maximum of the frames up to it: once the loudest frame so far is
in, later frames change nothing before them. Where the loudest frame comes first the
values equal Whisper's (tested against `asr_app.onnx.runtime.NumpyLogMel`).

Frames: one per 10-ms hop (160 samples at 16 kHz); frame t is centred on sample 160 t and
reads samples [160 t - 200, 160 t + 200), reflected at the start as Whisper pads.
"""

from __future__ import annotations

import numpy as np

N_FFT = 400
HOP = 160
FLOOR_DB = 8.0  # Whisper's clamp below the maximum, in log10 units (80 dB)


class StreamingLogMel:
    """Log-mel frames of a growing signal, each computed once and final when returned.

    Args:
        mel_filters: (n_fft // 2 + 1, n_mels) float32, the model's filter bank
            (`WhisperFeatureExtractor.mel_filters`, or an ONNX export's saved one).
    Raises:
        ValueError: a filter bank of another shape than (201, n_mels).
    Source: openai-whisper `log_mel_spectrogram` (window, hop, centring, log10 floor and
    scale); the running maximum in place of the window's maximum is this project's.
    """

    def __init__(self, mel_filters: np.ndarray):
        filters = np.asarray(mel_filters, np.float32)
        if filters.ndim != 2 or filters.shape[0] != N_FFT // 2 + 1:
            raise ValueError(f"mel_filters must be ({N_FFT // 2 + 1}, n_mels), got {filters.shape}")
        self.mel_filters = filters
        n = np.arange(N_FFT)
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)).astype(np.float32)
        self._padded = np.zeros(0, np.float32)  # reflect-padded signal from frame `frames` on
        self._head = np.zeros(0, np.float32)  # samples before the reflection can be made
        self.frames = 0  # frames returned so far
        self.samples = 0  # samples pushed so far
        self.running_max = -np.inf  # loudest log10 mel value so far

    @property
    def n_mels(self) -> int:
        return self.mel_filters.shape[1]

    def push(self, audio: np.ndarray) -> np.ndarray:
        """Add (samples,) float32 16 kHz audio; return the frames it completes, (n_mels,
        new_frames) float32, normalised (possibly none)."""
        audio = np.asarray(audio, np.float32).reshape(-1)
        self.samples += len(audio)
        if self.frames == 0 and len(self._padded) == 0:
            self._head = np.concatenate([self._head, audio])
            if len(self._head) <= N_FFT // 2:
                return np.zeros((self.n_mels, 0), np.float32)
            # Whisper reflects the first 200 samples about sample 0
            audio, self._head = np.concatenate([self._head[1 : N_FFT // 2 + 1][::-1], self._head]), self._head[:0]
        self._padded = np.concatenate([self._padded, audio])
        count = 0 if len(self._padded) < N_FFT else 1 + (len(self._padded) - N_FFT) // HOP
        if count == 0:
            return np.zeros((self.n_mels, 0), np.float32)
        x = self._padded
        frames = np.lib.stride_tricks.as_strided(x, (count, N_FFT), (x.strides[0] * HOP, x.strides[0]))
        power = np.abs(np.fft.rfft(frames * self.window, axis=-1)) ** 2
        log_spec = np.log10(np.maximum(power.astype(np.float32) @ self.mel_filters, 1e-10))  # (count, n_mels)
        peaks = np.maximum.accumulate(np.maximum(log_spec.max(axis=1), self.running_max))
        self.running_max = float(peaks[-1])
        out = (np.maximum(log_spec, (peaks - FLOOR_DB)[:, None]) + 4.0) / 4.0
        self._padded = self._padded[count * HOP :].copy()
        self.frames += count
        return out.T.astype(np.float32)


__all__ = ["StreamingLogMel"]
