"""Live transcription session without UI: streaming, running WER, saving on exit.

The Textual app (`asr_app.tui.live_app`) and `transcribe --live --no-tui` both drive
`run_live`, so the whole path from audio source to saved session is tested headless.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asr_app.audio import SAMPLE_RATE_HZ, rms_dbfs
from asr_app.streaming import StreamingOptions, StreamingTranscriber, StreamUpdate
from asr_app.wer import RunningWer, WerCounts


def sessions_root() -> Path:
    """Where live sessions are saved: `data_dir()/sessions`."""
    from asr_app.enroll.profile import data_dir

    return data_dir() / "sessions"


@dataclass
class LiveState:
    """What the UI shows. Times are seconds of audio; latency is wall seconds."""

    committed: str = ""
    tentative: str = ""
    wer_points: list = field(default_factory=list)  # (audio_s, WER %) after each commit
    wer_counts: WerCounts | None = None  # over the reference read so far, after the last commit
    wrong_words: list = field(default_factory=list)  # indices of normalized committed words in error
    missed_words: list = field(default_factory=list)  # indices of normalized reference words deleted
    last_latency_s: float | None = None  # end of speech -> phrase committed, seconds
    compute_s: float = 0.0


class LiveSession:
    """One live transcription: audio in, committed text out, WER tracked, saved at the end.

    Args:
        bundle: loaded WhisperBundle.
        reference: text the user will read (None: no WER, unless prompts are given).
        prompts: read-along prompts shown one after another (their text is the reference).
        options: StreamingOptions.
        sessions_dir: where `save()` puts its session folder (None: `sessions_root()`); a
            profile's own `sessions/`, where `adapt --live-sessions` finds them.
        input_path: the file replayed instead of the microphone (`--input`), recorded in
            transcript.json so that `adapt --live-sessions` leaves the replay out.
    """

    def __init__(
        self,
        bundle,
        reference: str | None = None,
        prompts: list[str] | None = None,
        options: StreamingOptions = StreamingOptions(),
        sessions_dir: Path | None = None,
        input_path: str | None = None,
    ):
        self.bundle = bundle
        self.sessions_dir = sessions_dir
        self.input_path = input_path
        self.stream = StreamingTranscriber(bundle, options)
        self.wer = RunningWer()
        self.prompts = list(prompts or [])
        self.prompt_index = 0
        if reference:
            self.wer.add_reference(reference)
        if self.prompts:
            self.wer.add_reference(self.prompts[0])
        self.state = LiveState()
        self._audio: list[np.ndarray] = []
        self.started = time.time()

    @property
    def tracks_wer(self) -> bool:
        return bool(self.wer.reference_words)

    @property
    def current_prompt(self) -> str | None:
        return self.prompts[self.prompt_index] if self.prompt_index < len(self.prompts) else None

    def insert_audio(self, chunk: np.ndarray) -> None:
        self._audio.append(np.asarray(chunk, np.float32))
        self.stream.insert_audio(chunk)

    def process(self) -> StreamUpdate | None:
        """At most one decode of the audio so far, as the streaming policy calls for; None when none was due."""
        t0 = time.perf_counter()
        update = self.stream.process()
        self.state.compute_s += time.perf_counter() - t0
        if update is not None:
            self._apply(update, time.perf_counter() - t0)
        return update

    def finish(self) -> StreamUpdate:
        update = self.stream.finish()
        self._apply(update, None)
        return update

    def _apply(self, update: StreamUpdate, latency_s: float | None) -> None:
        self.state.committed = self.stream.committed_text
        self.state.tentative = update.tentative
        if update.committed:
            self.wer.add_hypothesis(update.committed)
            if update.phrase_ended and self.prompts and self.prompt_index + 1 < len(self.prompts):
                self.prompt_index += 1  # read-along: the next sentence
                self.wer.add_reference(self.prompts[self.prompt_index])
            if self.tracks_wer:
                errors = self.wer.errors()
                self.state.wer_points.append((update.audio_end_s, 100 * errors.counts.wer))
                self.state.wer_counts = errors.counts
                self.state.wrong_words = errors.wrong
                self.state.missed_words = errors.missed
        if update.phrase_ended and latency_s is not None and update.phrase_end_s is not None:
            # audio that arrived after the phrase ended, plus the time this decode took
            self.state.last_latency_s = max(0.0, update.audio_end_s - update.phrase_end_s) + latency_s

    @property
    def rtf(self) -> float:
        audio_s = self.stream.audio_s
        return self.state.compute_s / audio_s if audio_s else 0.0

    def save(self, folder: Path | None = None) -> Path:
        """Write audio.flac, transcript.txt, transcript.json (words with times) and wer.json.

        Returns the folder (a new one under `sessions_dir` or `sessions_root()` unless given).
        """
        from asr_app.outputs import atomic_write_text, write_flac_atomic

        folder = folder or (self.sessions_dir or sessions_root()) / time.strftime(
            "%Y-%m-%d_%H-%M-%S", time.localtime(self.started)
        )
        folder.mkdir(parents=True, exist_ok=True)
        audio = np.concatenate(self._audio) if self._audio else np.zeros(0, np.float32)
        write_flac_atomic(folder / "audio.flac", audio, SAMPLE_RATE_HZ)
        atomic_write_text(folder / "transcript.txt", self.stream.committed_text + "\n")
        words = [
            {"word": w, "end_s": round(e, 2)} for w, e in zip(self.stream.committed_words, self.stream.committed_ends_s)
        ]
        atomic_write_text(
            folder / "transcript.json",
            json.dumps(
                {
                    "model": self.bundle.name,
                    **({"input": str(self.input_path)} if self.input_path else {}),
                    "audio_s": round(self.stream.audio_s, 2),
                    "rtf": round(self.rtf, 4),
                    "text": self.stream.committed_text,
                    "words": words,
                },
                indent=2,
                ensure_ascii=False,
            ),
        )
        if self.tracks_wer:
            errors = self.wer.errors()
            counts = errors.counts
            atomic_write_text(
                folder / "wer.json",
                json.dumps(
                    {
                        "wer": round(100 * counts.wer, 2),
                        "substitutions": counts.substitutions,
                        "deletions": counts.deletions,
                        "insertions": counts.insertions,
                        "reference_words_read": counts.reference_words,
                        "words_in_error": [self.wer.hypothesis_words[i] for i in errors.wrong],
                        "words_missed": [self.wer.reference_words[i] for i in errors.missed],
                        "reference": " ".join(self.wer.reference_words),
                        "hypothesis": " ".join(self.wer.hypothesis_words),
                        "over_time": [{"audio_s": round(t, 2), "wer": round(w, 2)} for t, w in self.state.wer_points],
                    },
                    indent=2,
                ),
            )
        return folder


def run_live(session: LiveSession, source, on_event: Callable[[str, object], None], stop=None) -> str:
    """Read `source` into `session` until the input ends, `stop` (a threading.Event) is set,
    or Ctrl-C.

    Events: ("level", dBFS) about every 0.1 s, ("update", StreamUpdate) after each decode.
    Returns why it ended: "input ended", "stopped" or "interrupted". The session is
    finished (every word heard committed) before returning, Ctrl-C included.
    """
    source.start()
    last_level = 0.0
    why = "stopped"
    try:
        while stop is None or not stop.is_set():
            chunk = source.read(0.1)
            if chunk is None:
                why = "input ended"
                break
            if len(chunk):
                session.insert_audio(chunk)
                now = time.monotonic()
                if now - last_level >= 0.1:
                    on_event("level", rms_dbfs(chunk))
                    last_level = now
            update = session.process()
            if update is not None:
                on_event("update", update)
    except KeyboardInterrupt:  # Ctrl-C ends the session like `q`: what was heard is still committed
        why = "interrupted"
    finally:
        source.close()
    on_event("update", session.finish())
    return why
