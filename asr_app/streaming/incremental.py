"""Live mode on a CALD model: the buffer's encoding kept up to date as audio arrives.

Each inserted piece of audio becomes final log-mel frames (`StreamingLogMel`, running-max
normalisation) fed to CALD's `StreamingEncoder`, which encodes every finished 2-s chunk
once and carries its layer states. A decode then asks only for the unfinished chunk and
Whisper's zero padding up to the next chunk boundary (the runner's `content_pad_frames`),
so the encoder work per update does not grow with the buffer. When the transcriber cuts
its buffer, the encoding restarts on what is left (positions count from the buffer's
start, as offline).

Torch backend only (the ONNX export has no stateful encoder graph yet); imports torch
lazily so the onnx backend stays torch-free.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from asr_app.audio import N_FRAMES
from asr_app.streaming.log_mel import StreamingLogMel


class IncrementalEncoder:
    """A live buffer's CALD encoding (see module docstring).

    Args:
        bundle: a torch `WhisperBundle` whose encoder is CALD's, chunked.
        pad_frames: at least this many zero log-mel frames after the audio, rounded up to
            a whole chunk, as `WhisperRunner.encode` pads.
    Raises:
        ValueError: an encoder that is not a chunked CALD encoder.
    """

    def __init__(self, bundle: Any, pad_frames: int):
        from asr_app.compression.cald.encoder import StreamingEncoder

        self._make = lambda: StreamingEncoder(bundle.model)
        self.encoder = self._make()  # raises ValueError on a non-CALD encoder
        self._filters = bundle.feature_extractor.mel_filters
        self.pad_frames = pad_frames
        self.log_mel = StreamingLogMel(self._filters)
        self.stale = False  # the buffer was cut: start again (`reset`) before the next read

    @classmethod
    def for_runner(cls, bundle: Any, runner: Any) -> IncrementalEncoder | None:
        """The incremental encoder for a decoder's runner, or None where the runner
        encodes whole windows (onnx backend, softmax encoders, no padding policy)."""
        if getattr(bundle, "backend", None) != "torch" or getattr(runner, "content_pad_frames", None) is None:
            return None
        return cls(bundle, runner.content_pad_frames)

    def invalidate(self) -> None:
        """The buffer was cut: pushes are ignored until `reset` starts again from what is
        left (done lazily, as a finalize may cut several times before the next read)."""
        self.stale = True

    def reset(self, audio: np.ndarray) -> None:
        """Start again from `audio` (the buffer after a cut)."""
        self.encoder = self._make()
        self.log_mel = StreamingLogMel(self._filters)
        self.stale = False
        self.push(audio)

    def push(self, audio: np.ndarray) -> None:
        """Add (samples,) float32 16 kHz audio: its final log-mel frames are encoded
        (nothing while stale: `reset` will take the whole buffer)."""
        import torch

        if self.stale:
            return
        mel = self.log_mel.push(audio)
        if mel.shape[1]:
            self.encoder.feed(torch.from_numpy(mel))

    def features(self):
        """Audio features for the decoder, (1, audio_ctx, d_model): the audio heard so far
        and the padding up to a chunk boundary (at most Whisper's 30-s window).

        Raises:
            RuntimeError: read while stale (call `reset` with the buffer first).
        """
        if self.stale:
            raise RuntimeError("the buffer was cut: reset the incremental encoder with it before reading")
        content = self.encoder.mel_frames
        step = 2 * self.encoder.chunk_frames
        frames = min(N_FRAMES, -(-max(1, content + self.pad_frames) // step) * step)
        return self.encoder.output(max(0, frames - content))[None]


__all__ = ["IncrementalEncoder"]
