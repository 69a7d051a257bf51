"""Checks a take must pass before it is kept, each failure with a reason a reader can act on.

Level figures are dBFS (0 dBFS = full scale). Speech and noise are told apart with
silero-vad: the speech level is the RMS over speech regions, the noise floor the RMS over
the quietest 10% of 32 ms frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from asr_app.audio import SAMPLE_RATE_HZ, rms_dbfs
from asr_app.vad import VadOptions, speech_chunks

FRAME_SAMPLES = 512  # 32 ms


@dataclass(frozen=True)
class QualityOptions:
    """Thresholds of the take checks.

    Attributes:
        clip_level: |sample| at or above this counts as clipped.
        max_clipped_fraction: more clipped samples than this fraction fails the take.
        min_speech_dbfs: speech quieter than this fails ("too quiet").
        min_snr_db: speech level minus noise floor below this fails ("noisy").
        min_duration_s: takes shorter than this fail ("too short").
        min_speech_s: less speech than this fails ("too short").
        min_speech_ratio: speech / duration below this fails ("mostly silence").
        max_wer: word error rate of the model's transcript against the prompt above which
            the take is flagged as misread (None: no check) ...
        max_cer: ... when the character error rate (spaces removed) is also above this, so
            that number formatting ("fourteen seventy" / "1470") never rejects a good take.
    """

    clip_level: float = 0.999
    max_clipped_fraction: float = 0.001
    min_speech_dbfs: float = -42.0
    min_snr_db: float = 15.0
    min_duration_s: float = 0.8
    min_speech_s: float = 0.4
    min_speech_ratio: float = 0.3
    max_wer: float | None = 0.4
    max_cer: float = 0.2

    def __post_init__(self):
        if not 0 < self.clip_level <= 1:
            raise ValueError(f"clip_level must be in (0, 1], got {self.clip_level}")
        if self.max_wer is not None and self.max_wer < 0:
            raise ValueError(f"max_wer must be >= 0, got {self.max_wer}")


@dataclass
class TakeReport:
    """Measurements of one take and the reasons it fails (empty: accepted)."""

    duration_s: float
    speech_s: float
    speech_dbfs: float
    noise_dbfs: float
    clipped_fraction: float
    transcript: str | None = None
    wer: float | None = None
    cer: float | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return not self.reasons

    @property
    def snr_db(self) -> float:
        return self.speech_dbfs - self.noise_dbfs

    def summary(self) -> str:
        """One line for a person: the verdict and the figures."""
        verdict = "kept" if self.accepted else "rejected: " + "; ".join(self.reasons)
        wer = f", WER {100 * self.wer:.0f}%" if self.wer is not None else ""
        return f"{verdict} ({self.duration_s:.1f} s, speech {self.speech_dbfs:.0f} dBFS, SNR {self.snr_db:.0f} dB{wer})"


def measure_take(audio: np.ndarray, vad_options: VadOptions = VadOptions(min_silence_ms=300, speech_pad_ms=30)):
    """Level measurements of (samples,) float32 16 kHz audio.

    Returns:
        (duration_s, speech_s, speech_dbfs, noise_dbfs).
    """
    duration_s = len(audio) / SAMPLE_RATE_HZ
    chunks = speech_chunks(audio, vad_options) if len(audio) >= FRAME_SAMPLES else []
    mask = np.zeros(len(audio), bool)
    for s, e in chunks:
        mask[s:e] = True
    speech = audio[mask]
    # noise floor: the quietest 10% of 32 ms frames (pauses between words count, where the
    # edges of VAD regions, which hold soft speech onsets, would bias a "non-speech" RMS)
    n = len(audio) // FRAME_SAMPLES
    frames = audio[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES) if n else audio[None, :]
    levels = np.atleast_1d(rms_dbfs(frames, axis=1))
    noise_dbfs = float(np.mean(np.sort(levels)[: max(1, len(levels) // 10)]))
    return duration_s, mask.sum() / SAMPLE_RATE_HZ, rms_dbfs(speech), noise_dbfs


def reading_errors(prompt: str, transcript: str) -> tuple[float, float]:
    """(WER, CER without spaces) of a transcript against the prompt, after Whisper's normalizer.

    Brackets are dropped but their words kept (the normalizer would delete bracketed text).
    """
    import re

    import jiwer

    from asr_app.wer import normalize, wer_counts

    ref = normalize(re.sub(r"[()\[\]<>{}]", " ", prompt))
    hyp = normalize(re.sub(r"[()\[\]<>{}]", " ", transcript))
    c = wer_counts(ref, hyp, normalized=True)
    wer = c.wer if c.reference_words else 1.0
    ref_chars, hyp_chars = ref.replace(" ", ""), hyp.replace(" ", "")
    cer = float(jiwer.cer(ref_chars, hyp_chars)) if ref_chars and hyp_chars else 1.0
    return wer, cer


def check_take(
    audio: np.ndarray, prompt: str, options: QualityOptions = QualityOptions(), transcribe=None, cut_off: bool = False
) -> TakeReport:
    """Run every check on a take.

    Args:
        audio: (samples,) float32, 16 kHz.
        prompt: the text that was to be read.
        options: thresholds.
        transcribe: callable audio -> text (the current model), for the misreading check;
            None skips that check.
        cut_off: the recorder stopped at its maximum length while speech went on.
    Returns:
        TakeReport; `accepted` when no check failed.
    """
    duration_s, speech_s, speech_dbfs, noise_dbfs = measure_take(audio)
    clipped = float(np.mean(np.abs(audio) >= options.clip_level)) if len(audio) else 0.0
    r = TakeReport(duration_s, speech_s, speech_dbfs, noise_dbfs, clipped)
    if clipped > options.max_clipped_fraction:
        r.reasons.append(
            f"clipping ({100 * clipped:.2f}% of samples at full scale): lower the input gain "
            "or move back from the microphone"
        )
    if duration_s < options.min_duration_s or speech_s < options.min_speech_s:
        r.reasons.append(f"too short ({duration_s:.1f} s, {speech_s:.1f} s of speech)")
    elif speech_s / duration_s < options.min_speech_ratio:
        r.reasons.append(f"mostly silence ({100 * speech_s / duration_s:.0f}% speech)")
    if cut_off:
        r.reasons.append("cut off: the take reached its maximum length while you were speaking")
    if speech_s >= options.min_speech_s:
        if speech_dbfs < options.min_speech_dbfs:
            r.reasons.append(
                f"too quiet (speech at {speech_dbfs:.0f} dBFS, need {options.min_speech_dbfs:.0f}): "
                "raise the input gain or come closer"
            )
        elif r.snr_db < options.min_snr_db:
            r.reasons.append(
                f"low signal-to-noise ({r.snr_db:.0f} dB, need {options.min_snr_db:.0f}): find a quieter room"
            )
    if transcribe is not None and options.max_wer is not None and speech_s >= options.min_speech_s:
        r.transcript = transcribe(audio)
        r.wer, r.cer = reading_errors(prompt, r.transcript)
        if r.wer > options.max_wer and r.cer > options.max_cer:
            r.reasons.append(f"misread? the model heard {r.transcript.strip()!r}")  # summary() gives the WER
    return r
