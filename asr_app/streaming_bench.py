"""Replay audio through the streaming transcriber on a simulated clock and measure it.

No wall clock drives the replay: audio "arrives" as simulated time passes, and each
`process()` call advances simulated time by the compute time it really took (2 cores here),
so the figures are what a live user would see on this machine, reproducibly.

Metrics:
- end-of-phrase latency: speech of a phrase ends (ground truth) -> the phrase is committed
  (the first phrase-end update at or after it);
- word emission lag: a committed word's end in the audio -> the moment it was committed;
- RTF: compute time / audio duration;
- flicker: tentative words shown that the next update did not keep.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from asr_app.audio import SAMPLE_RATE_HZ
from asr_app.streaming import StreamingTranscriber, StreamUpdate, _key


@dataclass
class LiveReport:
    """Figures of one replay. Times in seconds."""

    text: str = ""
    audio_s: float = 0.0
    compute_s: float = 0.0
    updates: int = 0
    decodes: int = 0
    eop_latencies_s: list[float] = field(default_factory=list)
    word_lags_s: list[float] = field(default_factory=list)
    tentative_shown: int = 0
    flicker_words: int = 0

    @property
    def rtf(self) -> float:
        return self.compute_s / self.audio_s if self.audio_s else 0.0

    @staticmethod
    def _pct(xs: list[float], q: float) -> float | None:
        if not xs:
            return None
        return float(np.percentile(xs, q)) if q != 50 else float(statistics.median(xs))

    def summary(self) -> dict:
        """JSON-ready figures: medians and 90th percentiles."""
        r = lambda x: None if x is None else round(x, 3)  # noqa: E731
        return {
            "audio_s": round(self.audio_s, 2),
            "compute_s": round(self.compute_s, 2),
            "rtf": round(self.rtf, 4),
            "updates": self.updates,
            "decodes": self.decodes,
            "eop_latency_median_s": r(self._pct(self.eop_latencies_s, 50)),
            "eop_latency_p90_s": r(self._pct(self.eop_latencies_s, 90)),
            "phrases": len(self.eop_latencies_s),
            "word_lag_median_s": r(self._pct(self.word_lags_s, 50)),
            "word_lag_p90_s": r(self._pct(self.word_lags_s, 90)),
            "tentative_words_shown": self.tentative_shown,
            "flicker_words": self.flicker_words,
            "flicker_rate": round(self.flicker_words / self.tentative_shown, 4) if self.tentative_shown else 0.0,
        }


def replay(
    stream: StreamingTranscriber, audio: np.ndarray, phrase_ends_s: list[float], chunk_s: float = 0.1
) -> LiveReport:
    """Feed `audio` as if live, on a simulated clock (see module docstring).

    Args:
        stream: a fresh StreamingTranscriber.
        audio: (samples,) float32 16 kHz.
        phrase_ends_s: where each phrase's speech ends in `audio` (ground truth), seconds.
        chunk_s: how often the simulated processor polls when idle.
    """
    rep = LiveReport(audio_s=len(audio) / SAMPLE_RATE_HZ)
    sim_t, inserted = 0.0, 0
    emitted_at: list[float] = []
    phrase_times: list[tuple[float, float]] = []  # (audio_end_s, sim time) of phrase-end updates
    tentative: list[str] = []

    def record(update: StreamUpdate) -> None:
        nonlocal tentative
        rep.updates += 1
        rep.decodes += update.decoded
        new = update.committed.split()
        emitted_at.extend([sim_t] * len(new))
        shown_next = [_key(w) for w in new + update.tentative.split()]
        kept = 0
        for a, b in zip([_key(w) for w in tentative], shown_next):
            if a != b:
                break
            kept += 1
        rep.flicker_words += len(tentative) - kept
        tentative = update.tentative.split()
        rep.tentative_shown += len(tentative)
        if update.phrase_ended:
            phrase_times.append((update.audio_end_s, sim_t))

    while True:
        arrived = min(len(audio), int(sim_t * SAMPLE_RATE_HZ))
        t0 = time.perf_counter()  # inserting counts: the VAD, and a CALD model's live encoding, run there
        if arrived > inserted:
            stream.insert_audio(audio[inserted:arrived])
            inserted = arrived
        update = stream.process()
        spent = time.perf_counter() - t0
        rep.compute_s += spent
        if update is None:
            if inserted >= len(audio):
                break
            sim_t += max(chunk_s, spent)
            continue
        sim_t += spent
        record(update)
    t0 = time.perf_counter()
    final = stream.finish()
    spent = time.perf_counter() - t0
    rep.compute_s += spent
    sim_t = max(sim_t, len(audio) / SAMPLE_RATE_HZ) + spent
    record(final)
    rep.text = stream.committed_text
    rep.word_lags_s = [t - e for t, e in zip(emitted_at, stream.committed_ends_s)]
    for end in phrase_ends_s:
        done = next((t for a, t in phrase_times if a >= end), None)
        if done is not None:
            rep.eop_latencies_s.append(done - end)
    return rep


def feed_fixed(stream: StreamingTranscriber, audio: np.ndarray, chunk_samples: int = 512) -> None:
    """Feed (samples,) float32 16 kHz `audio` in chunks of `chunk_samples` (the last one may
    be shorter), processing after each, as the live path does at --speed 0. No clock: the
    stream's state afterwards depends only on what it was fed."""
    for i in range(0, len(audio), chunk_samples):
        stream.insert_audio(audio[i : i + chunk_samples])
        stream.process()


def replay_fixed(stream: StreamingTranscriber, audio: np.ndarray, chunk_samples: int = 512) -> str:
    """`feed_fixed` then `finish()`; returns the committed text. Deterministic."""
    feed_fixed(stream, audio, chunk_samples)
    stream.finish()
    return stream.committed_text


def deletion_runs(reference: str, hypothesis: str) -> list[list[str]]:
    """Runs of consecutive reference words missing from the hypothesis (normalized words),
    longest first; a substitution does not count as a missing word.

    Used to compare streaming against offline transcription of the same audio: a run of
    several words means streaming lost a stretch of speech that offline heard.
    """
    import jiwer

    from asr_app.wer import normalize

    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    if not ref:
        return []
    if not hyp:
        return [ref]
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    runs = [ref[c.ref_start_idx : c.ref_end_idx] for c in out.alignments[0] if c.type == "delete"]
    return sorted(runs, key=len, reverse=True)


def concatenate_clips(clips: list[np.ndarray], gap_s: float = 0.6) -> tuple[np.ndarray, list[float]]:
    """Join clips with `gap_s` of silence; returns the audio and where each clip's speech ends.

    Speech ends come from silero-vad on each clip (its last speech region, no padding).
    """
    from asr_app.vad import VadOptions, speech_chunks

    gap = np.zeros(int(gap_s * SAMPLE_RATE_HZ), np.float32)
    pieces, ends, pos = [], [], 0
    for clip in clips:
        chunks = speech_chunks(clip, VadOptions(min_silence_ms=300, speech_pad_ms=0))
        end = chunks[-1][1] if chunks else len(clip)
        ends.append((pos + end) / SAMPLE_RATE_HZ)
        pieces += [clip, gap]
        pos += len(clip) + len(gap)
    return np.concatenate(pieces), ends


def select_clips(utterances: list, minutes: float, gap_s: float = 0.6) -> list:
    """The first utterances, in order, whose durations (plus pauses) reach `minutes`."""
    from asr_app.audio import audio_duration_s

    chosen, total_s = [], 0.0
    for u in utterances:
        chosen.append(u)
        total_s += audio_duration_s(u.audio) + gap_s
        if total_s >= minutes * 60:
            break
    return chosen


def live_bench(
    bundle,
    clips: list[np.ndarray] | None = None,
    audio: np.ndarray | None = None,
    reference: str | None = None,
    options=None,
) -> dict:
    """Streaming figures beside offline WER on the same audio.

    Give either `clips` (joined with short pauses; phrase ends from each clip) or one
    `audio` signal (phrase ends from silero-vad over it).

    Returns:
        A dict: the LiveReport summary, plus streaming and offline WER (percent) and their
        substitutions, deletions and insertions when a reference is given, the longest
        run of offline words missing from the streaming text, and both transcripts.
    """
    from asr_app.streaming import StreamingOptions
    from asr_app.transcribe import TranscribeOptions, Transcriber
    from asr_app.vad import VadOptions, speech_chunks
    from asr_app.wer import corpus_wer

    if clips is not None:
        audio, ends = concatenate_clips(clips)
    else:
        ends = [e / SAMPLE_RATE_HZ for _, e in speech_chunks(audio, VadOptions(min_silence_ms=400, speech_pad_ms=0))]
    options = options or StreamingOptions()
    report = replay(StreamingTranscriber(bundle, options), audio, ends)
    # offline with the same encoder padding (a CALD model's --encoder-padding), else its defaults
    offline_options = TranscribeOptions()
    offline_options = dataclasses.replace(
        offline_options,
        decoding=dataclasses.replace(offline_options.decoding, encoder_padding_s=options.decoding.encoder_padding_s),
    )
    offline = Transcriber(offline_options, bundle=bundle).transcribe_audio(audio)
    out = report.summary()
    out["offline_rtf"] = round(offline.rtf, 4)
    if reference is not None:
        for name, text in (("streaming", report.text), ("offline", offline.text)):
            counts = corpus_wer([reference], [text])
            out[f"{name}_wer"] = round(100 * counts.wer, 2)
            out[f"{name}_errors"] = {
                "substitutions": counts.substitutions,
                "deletions": counts.deletions,
                "insertions": counts.insertions,
                "reference_words": counts.reference_words,
            }
    runs = deletion_runs(offline.text, report.text)
    out["longest_run_missed_vs_offline"] = len(runs[0]) if runs else 0
    out["streaming_text"] = report.text
    out["offline_text"] = offline.text
    return out
