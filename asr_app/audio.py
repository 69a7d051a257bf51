"""Audio input: decode any file to 16 kHz mono float32, and compute Whisper log-mel windows.

Decoding goes through soundfile (libsndfile: wav, flac, ogg, mp3, ...) and falls back to
PyAV (m4a, aac, webm, ... where installed). Resampling uses librosa (soxr).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from asr_app.errors import AudioError

SAMPLE_RATE_HZ = 16_000
HOP_LENGTH = 160  # samples = 10 ms, one log-mel frame
CHUNK_S = 30  # Whisper's window
N_SAMPLES = CHUNK_S * SAMPLE_RATE_HZ  # 480_000 samples in a window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 log-mel frames in a window
FRAMES_PER_SECOND = SAMPLE_RATE_HZ // HOP_LENGTH  # 100
SECONDS_PER_TOKEN = 0.02  # one timestamp step = 2 frames = one encoder position (audio_ctx)
N_TIMESTAMPS = N_FRAMES // 2  # 1500 timestamp positions in a window (<|0.00|> .. <|30.00|>)
AUDIO_EXTENSIONS = frozenset(".wav .flac .mp3 .ogg .oga .opus .m4a .aac .wma .webm .aiff .aif .au .mp4 .mka".split())


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence what C decoders (libmpg123, FFmpeg) print straight to file descriptor 2.

    Their "Note: Illegal Audio-MPEG-Header ..." lines would bury the one clear error line
    a bad file gets. Python-level stderr is untouched.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. captured)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def _read_soundfile(path: Path) -> tuple[np.ndarray, int] | None:
    """Decode with libsndfile; None when libsndfile does not recognize the format."""
    import soundfile as sf

    try:
        f = sf.SoundFile(str(path))
    except Exception:  # LibsndfileError / RuntimeError: not a format libsndfile knows
        return None
    with f:
        sr = f.samplerate
        try:
            data = f.read(dtype="float32", always_2d=True)
        except Exception as e:  # a known format that breaks off mid-stream
            raise AudioError(f"{path}: truncated or corrupt {f.format} file ({e}); re-export or re-copy it") from None
    if f.format == "WAV":
        _check_riff_complete(path)
    return data, sr


def _check_riff_complete(path: Path) -> None:
    """Raise AudioError when a WAV's data chunk declares more bytes than the file holds.

    libsndfile quietly shortens a cut-off WAV to what is there, so this is checked by hand.
    """
    import struct

    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                available = size - pos - 8
                if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:
                    raise AudioError(
                        f"{path}: truncated: the WAV header declares {chunk_size} bytes of audio, "
                        f"the file holds {available}; re-export or re-copy the file"
                    )
                return
            pos += 8 + chunk_size + (chunk_size & 1)


def _read_av(path: Path) -> tuple[np.ndarray, int]:
    import av

    chunks = []
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise AudioError(f"{path}: has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HZ)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return data[:, None], SAMPLE_RATE_HZ


def load_audio(path: str | Path) -> np.ndarray:
    """Decode an audio file to mono float32 at 16 kHz.

    Args:
        path: any file soundfile or PyAV can decode, any sample rate and channel count.
    Returns:
        (samples,) float32 in [-1, 1], 16 kHz; channels averaged.
    Raises:
        AudioError: missing, empty (0 bytes), not audio, truncated, unreadable, or holding
            no samples. The message names the file and the reason.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file or folder")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise AudioError(f"{path}: unreadable: {e.strerror}") from None
    if size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise AudioError(f"{path}: unreadable: {e.strerror}") from None
    with _quiet_native_stderr():
        decoded = _read_soundfile(path)
        if decoded is None:
            try:
                decoded = _read_av(path)
            except AudioError:
                raise
            except ImportError:
                raise AudioError(f"{path}: not a readable audio file (format unknown to libsndfile)") from None
            except Exception as e:
                reason = getattr(e, "strerror", None) or str(e)
                raise AudioError(f"{path}: not a readable audio file ({reason})") from None
    data, sr = decoded
    if data.size == 0:
        raise AudioError(f"{path}: contains no audio samples (zero length)")
    audio = data.mean(axis=1).astype(np.float32) if data.shape[1] > 1 else data[:, 0].astype(np.float32)
    if not np.isfinite(audio).all():
        raise AudioError(f"{path}: contains NaN or infinite samples; the file is corrupt")
    if sr != SAMPLE_RATE_HZ:
        import librosa

        audio = librosa.resample(audio, orig_sr=sr, target_sr=SAMPLE_RATE_HZ, res_type="soxr_hq")
    return np.ascontiguousarray(audio, dtype=np.float32)


def audio_duration_s(path: str | Path) -> float:
    """Duration in seconds from the file header, without decoding; 0.0 if unknown."""
    try:
        import soundfile as sf

        return float(sf.info(str(path)).duration)
    except Exception:
        pass
    try:
        import av

        with av.open(str(path)) as c:
            return float(c.duration or 0) / 1_000_000
    except Exception:
        return 0.0


def rms_dbfs(audio: np.ndarray, axis: int | None = None):
    """RMS level in dBFS (0 = full-scale square wave) of (samples,) audio, or per row with axis=-1.

    Silence gives -100 dBFS rather than minus infinity.
    """
    audio = np.asarray(audio)
    if audio.size == 0:
        return -100.0
    level = 10 * np.log10(np.mean(np.square(audio, dtype=np.float64), axis=axis) + 1e-10)
    return float(level) if axis is None else level


def peak_frame_dbfs(audio: np.ndarray, frame_samples: int = 512) -> float:
    """Level of the loudest frame: max over `frame_samples` frames of their RMS, dBFS.

    Args:
        audio: (samples,) float32; a last partial frame counts as a frame.
    Returns:
        dBFS; -100 for empty audio or digital silence.
    """
    audio = np.asarray(audio, np.float32)
    if audio.size == 0:
        return -100.0
    pad = (-len(audio)) % frame_samples
    frames = np.pad(audio, (0, pad)).reshape(-1, frame_samples)
    return float(np.max(rms_dbfs(frames, axis=-1)))


def log_mel_content(feature_extractor, audio: np.ndarray) -> np.ndarray:
    """Whisper's normalised log-mel of the audio's own length, unpadded: one frame per 10 ms
    hop (len(audio) // 160 frames), normalised over this audio (its loudest frame).

    Args:
        feature_extractor: as `log_mel_window`.
        audio: (samples,) float32, 16 kHz, any length.
    Returns:
        (n_mels, len(audio) // 160) float32.
    """
    content_frames = len(audio) // HOP_LENGTH
    padded = np.concatenate([np.asarray(audio, np.float32), np.zeros(HOP_LENGTH, np.float32)])
    if hasattr(feature_extractor, "log_mel"):  # the numpy one of the ONNX backend
        return feature_extractor.log_mel(padded)[:, :content_frames].astype(np.float32)
    return (
        feature_extractor(
            padded, sampling_rate=SAMPLE_RATE_HZ, padding="longest", truncation=False, return_tensors="np"
        )
        .input_features[0][:, :content_frames]
        .astype(np.float32)
    )


def log_mel_window(feature_extractor, audio: np.ndarray) -> np.ndarray:
    """Log-mel of up to 30 s of audio, padded to a full window the way Whisper pads it.

    The log-mel is computed on the content only (plus one hop of zeros), then padded with
    zeros *in the normalized log-mel domain* up to 3000 frames, as openai-whisper and
    faster-whisper do; padding the audio with 30 s of zero samples instead (what a plain
    feature-extractor call does) gives the encoder different input and a worse WER.

    Args:
        feature_extractor: a `WhisperFeatureExtractor`, or anything with a
            `log_mel(audio) -> (n_mels, frames)` method (`asr_app.onnx.runtime.NumpyLogMel`).
        audio: (samples,) float32, 16 kHz, at most N_SAMPLES long.
    Returns:
        (n_mels, 3000) float32.
    Source: openai-whisper `transcribe()` (`pad_or_trim` of the mel segment).
    """
    if len(audio) > N_SAMPLES:
        raise ValueError(f"log_mel_window takes at most {N_SAMPLES} samples, got {len(audio)}")
    mel = log_mel_content(feature_extractor, audio)
    out = np.zeros((mel.shape[0], N_FRAMES), np.float32)
    out[:, : mel.shape[1]] = mel
    return out
