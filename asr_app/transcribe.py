"""Transcription of whole files of any length: VAD, 30-second windows, segments with times.

transcriber = Transcriber(TranscribeOptions(model="tiny.en"))
transcript = transcriber.transcribe_file("talk.flac")
print(transcript.text, transcript.segments[0].start_s)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from asr_app.audio import (
    FRAMES_PER_SECOND,
    HOP_LENGTH,
    N_FRAMES,
    SAMPLE_RATE_HZ,
    load_audio,
    log_mel_window,
    peak_frame_dbfs,
)
from asr_app.decoding import DecodingOptions, WindowDecoder
from asr_app.errors import OptionError
from asr_app.models import BACKENDS, DEFAULT_MODEL, load_model
from asr_app.vad import SpeechView, VadOptions, speech_chunks
from asr_app.whisper_rules import tokens_to_segments


@dataclass(frozen=True)
class TranscribeOptions:
    """Everything that decides a transcript.

    Attributes:
        model: built-in name, model folder or hub id (see `asr_app.models`).
        device: "cpu" or "cuda".
        threads: CPU threads (torch or onnxruntime); None leaves the library's default.
        backend: "torch" or "onnx" (onnxruntime, see `asr_app.onnx`).
        quantize: weights of the ONNX export made on first use: "int8", "fp16" or "none".
        decoding: per-window DecodingOptions (language, beam size, temperatures, ...).
        vad: skip non-speech with silero-vad before decoding.
        vad_options: VadOptions.
        condition_on_previous_text: prompt each window with the previous window's text.
        silence_dbfs: a window whose loudest 32 ms frame is quieter than this (RMS, dBFS)
            holds no speech and is skipped without decoding, VAD or not: Whisper writes
            "you" on digital silence with a confident log-probability, which its own
            no-speech test lets through. None turns the check off.
    Raises:
        ValueError: from __post_init__, naming the field.
    """

    model: str = DEFAULT_MODEL
    device: str = "cpu"
    threads: int | None = None
    backend: str = "torch"
    quantize: str = "int8"
    decoding: DecodingOptions = field(default_factory=DecodingOptions)
    vad: bool = True
    vad_options: VadOptions = field(default_factory=VadOptions)
    condition_on_previous_text: bool = False
    silence_dbfs: float | None = -70.0

    def __post_init__(self):
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")


@dataclass
class Segment:
    """A piece of transcript. Times are seconds in the original audio."""

    start_s: float
    end_s: float
    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    temperature: float = 0.0


@dataclass
class Transcript:
    """The transcript of one file or signal.

    Attributes:
        segments: in time order.
        language: decoded language code.
        duration_s: audio duration, seconds.
        decode_time_s: wall time spent transcribing (VAD and decoding, not file reading).
        model: model name.
        path: source file, if any.
    """

    segments: list[Segment]
    language: str
    duration_s: float
    decode_time_s: float
    model: str
    path: str | None = None

    @property
    def text(self) -> str:
        """Segment texts joined, surrounding whitespace removed."""
        return "".join(s.text for s in self.segments).strip()

    @property
    def rtf(self) -> float:
        """Real-time factor: decode_time_s / duration_s (lower is faster)."""
        return self.decode_time_s / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict:
        """JSON-ready dict: metadata and segments."""
        return {
            "path": self.path,
            "model": self.model,
            "language": self.language,
            "duration_s": round(self.duration_s, 3),
            "decode_time_s": round(self.decode_time_s, 3),
            "rtf": round(self.rtf, 4),
            "text": self.text,
            "segments": [
                {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(s).items()} for s in self.segments
            ],
        }


class Transcriber:
    """Loads a model once and transcribes many files or signals with it.

    Args:
        options: TranscribeOptions.
        bundle: an already loaded WhisperBundle to reuse (else `options.model` is loaded).
        on_progress: told the steps of a first-use conversion or export (see `load_model`).
    Raises:
        ModelError: the model cannot be loaded.
        OptionError: options the model cannot honour (a language on an English-only model).
    """

    def __init__(self, options: TranscribeOptions = TranscribeOptions(), bundle=None, on_progress=None):
        if options.threads and options.backend == "torch":
            import torch

            torch.set_num_threads(options.threads)
        self.options = options
        self.bundle = bundle or load_model(
            options.model, options.device, options.backend, options.threads, options.quantize, on_progress=on_progress
        )
        try:
            self.decoder = WindowDecoder(self.bundle, options.decoding)
        except ValueError as e:
            raise OptionError(str(e)) from None

    def transcribe_file(self, path: str | Path) -> Transcript:
        """Transcribe an audio file. Raises AudioError for a bad file (see `load_audio`)."""
        audio = load_audio(path)
        transcript = self.transcribe_audio(audio)
        transcript.path = str(path)
        return transcript

    def transcribe_audio(self, audio: np.ndarray) -> Transcript:
        """Transcribe (samples,) float32 16 kHz audio of any length.

        Long audio is decoded in 30-second windows; each window's last unfinished segment
        is re-decoded at the start of the next window (whisper's seek), so no text is lost
        or repeated at boundaries. Memory is the audio plus one window's features.
        """
        t0 = time.perf_counter()
        chunks = speech_chunks(audio, self.options.vad_options) if self.options.vad else None
        view = SpeechView(audio, chunks)
        segments, language = self._transcribe_view(view)
        for s in segments:
            s.start_s = round(view.to_original_s(s.start_s), 3)
            s.end_s = round(max(view.to_original_s(s.end_s, is_end=True), s.start_s), 3)
        return Transcript(
            segments=segments,
            language=language,
            duration_s=len(audio) / SAMPLE_RATE_HZ,
            decode_time_s=time.perf_counter() - t0,
            model=self.bundle.name,
        )

    def _transcribe_view(self, view: SpeechView) -> tuple[list[Segment], str]:
        fe = self.bundle.feature_extractor
        tok = self.bundle.tokenizer
        ts_begin = self.bundle.special.timestamp_begin
        dec_opts = self.options.decoding
        content_frames = len(view) // HOP_LENGTH
        seek = 0
        segments: list[Segment] = []
        previous: list[int] = []
        language = dec_opts.language or ("en" if not self.bundle.is_multilingual else None)
        while seek < content_frames:
            window_frames = min(N_FRAMES, content_frames - seek)
            window = view.slice(seek * HOP_LENGTH, (seek + window_frames) * HOP_LENGTH)
            if self.options.silence_dbfs is not None and peak_frame_dbfs(window) < self.options.silence_dbfs:
                seek += window_frames  # nothing but (near-)digital silence: nothing to hear
                continue
            mel = log_mel_window(fe, window)
            prompt = previous if self.options.condition_on_previous_text else None
            result = self.decoder.decode(mel, prompt, window_frames)
            language = language or result.language
            offset_s = seek / FRAMES_PER_SECOND
            silent = (
                dec_opts.no_speech_threshold is not None
                and result.no_speech_prob > dec_opts.no_speech_threshold
                and (dec_opts.logprob_threshold is None or result.avg_logprob < dec_opts.logprob_threshold)
            )
            if silent:
                seek += window_frames
                continue
            if dec_opts.without_timestamps:
                pieces = [(offset_s, offset_s + window_frames / FRAMES_PER_SECOND, result.tokens)]
                advance = window_frames
            else:
                pieces, advance = tokens_to_segments(result.tokens, ts_begin, offset_s, window_frames)
            for start, end, text_tokens in pieces:
                text = tok.decode(text_tokens)
                if text.strip():
                    segments.append(
                        Segment(start, end, text, result.avg_logprob, result.no_speech_prob, result.temperature)
                    )
            seek += min(advance, window_frames)
            # whisper resets the prompt after a high-temperature result to stop loops
            previous = [] if result.temperature > 0.5 else (previous + [t for t in result.tokens])[-223:]
        return segments, language or "en"


def transcribe_file(
    path: str | Path, options: TranscribeOptions = TranscribeOptions(), transcriber: Transcriber | None = None
) -> Transcript:
    """Transcribe one file. Pass a `Transcriber` to reuse a loaded model across calls.

    Raises:
        AudioError: bad file; ModelError: model cannot be loaded; OptionError: bad options.
    """
    return (transcriber or Transcriber(options)).transcribe_file(path)
