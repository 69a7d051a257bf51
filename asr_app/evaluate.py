"""`eval`: corpus WER of a model on a labelled set, with a per-speaker table and RTF."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from asr_app.audio import load_audio
from asr_app.datasets import Utterance
from asr_app.errors import AsrAppError
from asr_app.transcribe import Transcriber
from asr_app.wer import WerCounts, normalize, wer_counts


@dataclass
class EvalReport:
    """Results of `evaluate`.

    Attributes:
        model: model name.
        dataset: what was evaluated (path and filter).
        total: corpus counts over all transcribed utterances.
        per_speaker: speaker -> counts.
        audio_s, decode_s: total audio and decoding wall time, seconds.
        utterances: one dict per utterance (reference, hypothesis, both normalized, counts).
        failed: utterance id -> reason, for audio that could not be read.
    """

    model: str
    dataset: str
    total: WerCounts = WerCounts(0, 0, 0, 0)
    per_speaker: dict[str, WerCounts] = field(default_factory=dict)
    audio_s: float = 0.0
    decode_s: float = 0.0
    utterances: list[dict] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def rtf(self) -> float:
        """Decoding wall time / audio duration over the whole set."""
        return self.decode_s / self.audio_s if self.audio_s else 0.0

    def to_dict(self) -> dict:
        """JSON-ready report."""

        def counts(c: WerCounts) -> dict:
            return {
                "wer": round(100 * c.wer, 3),
                "substitutions": c.substitutions,
                "deletions": c.deletions,
                "insertions": c.insertions,
                "reference_words": c.reference_words,
            }

        return {
            "model": self.model,
            "dataset": self.dataset,
            "utterances_total": len(self.utterances),
            "audio_s": round(self.audio_s, 2),
            "decode_s": round(self.decode_s, 2),
            "rtf": round(self.rtf, 4),
            "total": counts(self.total),
            "per_speaker": {k: counts(v) for k, v in sorted(self.per_speaker.items())},
            "failed": self.failed,
            "utterances": self.utterances,
        }


def evaluate(
    utterances: list[Utterance],
    transcriber: Transcriber,
    dataset_name: str,
    on_utterance: Callable[[dict], None] | None = None,
) -> EvalReport:
    """Transcribe each utterance and score it against its reference.

    WER is corpus-level (total edits / total reference words) after Whisper's English
    normalizer on both sides. Unreadable audio is recorded in `failed` and left out.
    """
    report = EvalReport(model=transcriber.bundle.name, dataset=dataset_name)
    speakers: dict[str, WerCounts] = defaultdict(lambda: WerCounts(0, 0, 0, 0))
    for utt in utterances:
        try:
            audio = load_audio(utt.audio)
        except AsrAppError as e:
            report.failed[utt.id] = str(e)
            continue
        t0 = time.perf_counter()
        transcript = transcriber.transcribe_audio(audio)
        elapsed = time.perf_counter() - t0
        ref_n, hyp_n = normalize(utt.text), normalize(transcript.text)
        c = wer_counts(ref_n, hyp_n, normalized=True)
        report.total = report.total + c
        speakers[utt.speaker] = speakers[utt.speaker] + c
        report.audio_s += transcript.duration_s
        report.decode_s += elapsed
        row = {
            "id": utt.id,
            "speaker": utt.speaker,
            "audio": str(utt.audio),
            "duration_s": round(transcript.duration_s, 3),
            "decode_s": round(elapsed, 3),
            "reference": utt.text,
            "hypothesis": transcript.text,
            "reference_normalized": ref_n,
            "hypothesis_normalized": hyp_n,
            "substitutions": c.substitutions,
            "deletions": c.deletions,
            "insertions": c.insertions,
            "reference_words": c.reference_words,
        }
        report.utterances.append(row)
        if on_utterance:
            on_utterance(row)
    report.per_speaker = dict(speakers)
    return report
