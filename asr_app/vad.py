"""Voice activity detection: silero-vad's ONNX model on onnxruntime, driven from numpy.

The model file comes from the `silero-vad` PyPI package (MIT), read from its folder
without importing the package (its Python code imports torch, which costs 1.6 s and
200 MB on the onnx path). We use its "sequence" export, which runs a block of 32 ms
frames in one call with the LSTM state carried between calls and gives the same
per-frame probabilities as the stock streaming model.

Speech chunks are transcribed as one stitched stream, as faster-whisper does, so silence
and noise never reach the decoder; timestamps are mapped back to the original audio.
"""

from __future__ import annotations

import bisect
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr_app.audio import SAMPLE_RATE_HZ
from asr_app.errors import ModelError

FRAME_SAMPLES = 512  # samples = 32 ms, one silero-vad frame at 16 kHz
CONTEXT_SAMPLES = 64  # samples of the previous frame the model sees before each frame
STATE_SIZE = 128  # LSTM width
BLOCK_FRAMES = 512  # frames per onnxruntime call (16.4 s of audio)
MODEL_FILE = "silero_vad_16k_sequence.onnx"


@dataclass(frozen=True)
class VadOptions:
    """silero-vad settings (faster-whisper's defaults).

    Attributes:
        threshold: speech probability at or above which a 32 ms frame starts speech.
        neg_threshold: within speech, a frame below this counts as silence (None:
            threshold - 0.15, at least 0.01, as silero-vad does).
        min_speech_ms: shorter speech bursts are dropped.
        min_silence_ms: silences shorter than this do not split speech.
        speech_pad_ms: padding added on both sides of each chunk.
    Raises:
        ValueError: from __post_init__, naming the field.
    """

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_ms: int = 250
    min_silence_ms: int = 2000
    speech_pad_ms: int = 400

    def __post_init__(self):
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.neg_threshold is not None and not 0 < self.neg_threshold <= self.threshold:
            raise ValueError(f"neg_threshold must be in (0, threshold], got {self.neg_threshold}")
        for name in ("min_speech_ms", "min_silence_ms", "speech_pad_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def exit_threshold(self) -> float:
        """The probability below which a frame inside speech counts as silence."""
        return self.neg_threshold if self.neg_threshold is not None else max(self.threshold - 0.15, 0.01)


def model_path() -> Path:
    """The silero-vad sequence model shipped in the `silero-vad` package's data folder.

    Raises:
        ModelError: the package or its model file is missing.
    """
    spec = importlib.util.find_spec("silero_vad")  # locates the package without running it
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / MODEL_FILE
        if path.is_file():
            return path
    raise ModelError(
        f"silero-vad's {MODEL_FILE} is missing: run `pip install 'silero-vad>=6.2'`, or transcribe with --no-vad"
    )


@functools.lru_cache(maxsize=1)
def _session():
    """One onnxruntime session for every stream (the state lives in the caller)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = False
    opts.log_severity_level = 3
    return ort.InferenceSession(str(model_path()), opts, providers=["CPUExecutionProvider"])


class SileroVad:
    """Streaming silero-vad: audio in, one speech probability per 32 ms frame out.

    Feed any number of samples with `probabilities`; whole frames are run (in blocks) and
    the remainder waits for the next call, so feeding a signal in pieces gives exactly the
    probabilities of feeding it at once.
    Source: silero-vad (Silero Team), its sequence ONNX export and streaming frame context.
    """

    def __init__(self):
        self.session = _session()
        self.reset()

    def reset(self) -> None:
        """Forget the stream: zero LSTM state and context, drop pending samples."""
        self._h = np.zeros((1, 1, STATE_SIZE), np.float32)
        self._c = np.zeros((1, 1, STATE_SIZE), np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, np.float32)
        self._pending = np.zeros(0, np.float32)

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability of every whole frame completed by `audio`.

        Args:
            audio: (samples,) float32 16 kHz, any length.
        Returns:
            (frames,) float32 in [0, 1]: one value per 512-sample frame completed by this
            call (samples left over wait for the next call).
        """
        x = np.concatenate([self._pending, np.asarray(audio, np.float32).reshape(-1)])
        n_frames = len(x) // FRAME_SAMPLES
        self._pending = x[n_frames * FRAME_SAMPLES :].copy()
        out = []
        for first in range(0, n_frames, BLOCK_FRAMES):
            frames = x[first * FRAME_SAMPLES : min(n_frames, first + BLOCK_FRAMES) * FRAME_SAMPLES]
            frames = frames.reshape(-1, FRAME_SAMPLES)
            contexts = np.empty((len(frames), CONTEXT_SAMPLES), np.float32)
            contexts[0] = self._context
            contexts[1:] = frames[:-1, -CONTEXT_SAMPLES:]
            self._context = frames[-1, -CONTEXT_SAMPLES:].copy()
            probs, self._h, self._c = self.session.run(
                ["speech_probs", "hn", "cn"],
                {"input": np.concatenate([contexts, frames], axis=1), "h": self._h, "c": self._c},
            )
            out.append(np.asarray(probs, np.float32).reshape(-1))
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def flush(self) -> np.ndarray:
        """The probability of the last partial frame (zero-padded), if any samples wait."""
        if not len(self._pending):
            return np.zeros(0, np.float32)
        return self.probabilities(np.zeros(FRAME_SAMPLES - len(self._pending), np.float32))


def speech_probabilities(audio: np.ndarray) -> np.ndarray:
    """(frames,) float32 speech probabilities of a whole signal, the last frame zero-padded."""
    vad = SileroVad()
    probs = vad.probabilities(audio)
    return np.concatenate([probs, vad.flush()])


def speech_regions(probs: np.ndarray, n_samples: int, options: VadOptions = VadOptions()) -> list[tuple[int, int]]:
    """Speech regions from per-frame probabilities (hysteresis, minimum lengths, padding).

    A region starts at a frame whose probability reaches `threshold`; it ends where the
    probability stays below `exit_threshold` for `min_silence_ms`; regions of
    `min_speech_ms` or less are dropped. Each region is padded by `speech_pad_ms` on both
    sides; a gap shorter than two paddings is split between its neighbours.

    Args:
        probs: (frames,) float32, one per 512 samples.
        n_samples: length of the signal, samples.
    Returns:
        Sorted, non-overlapping [start, end) sample ranges.
    Source: silero-vad `get_speech_timestamps` (no maximum speech length).
    """
    min_speech = SAMPLE_RATE_HZ * options.min_speech_ms // 1000
    min_silence = SAMPLE_RATE_HZ * options.min_silence_ms // 1000
    pad = SAMPLE_RATE_HZ * options.speech_pad_ms // 1000
    exit_threshold = options.exit_threshold
    regions: list[list[int]] = []
    start: int | None = None
    silence_from: int | None = None  # first sample of the current silence inside speech
    for i, p in enumerate(np.asarray(probs, np.float32).tolist()):
        sample = i * FRAME_SAMPLES
        if p >= options.threshold:
            silence_from = None
            if start is None:
                start = sample
                continue
        if start is not None and p < exit_threshold:
            if silence_from is None:
                silence_from = sample
            if sample - silence_from >= min_silence:
                if silence_from - start > min_speech:
                    regions.append([start, silence_from])
                start = silence_from = None
    if start is not None and n_samples - start > min_speech:
        regions.append([start, n_samples])
    for i, region in enumerate(regions):
        if i == 0:
            region[0] = max(0, region[0] - pad)
        if i + 1 < len(regions):
            gap = regions[i + 1][0] - region[1]
            if gap < 2 * pad:
                region[1] += gap // 2
                regions[i + 1][0] = max(0, regions[i + 1][0] - gap // 2)
            else:
                region[1] = min(n_samples, region[1] + pad)
                regions[i + 1][0] = max(0, regions[i + 1][0] - pad)
        else:
            region[1] = min(n_samples, region[1] + pad)
    return [(int(s), int(e)) for s, e in regions]


def speech_chunks(audio: np.ndarray, options: VadOptions = VadOptions()) -> list[tuple[int, int]]:
    """Speech regions of 16 kHz audio.

    Args:
        audio: (samples,) float32, 16 kHz.
    Returns:
        Sorted, non-overlapping [start, end) sample ranges.
    Raises:
        ModelError: silero-vad's model file is missing.
    Source: silero-vad `get_speech_timestamps`.
    """
    return speech_regions(speech_probabilities(audio), len(audio), options)


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
