"""An enrollment session without any UI: prompts, takes, checks, saving, progress.

The Textual screen and the headless `--no-tui` mode both drive this class, so everything
a user can do (record, re-record, skip, flag, quit, resume) is tested without a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from asr_app.enroll.profile import Profile, Take
from asr_app.enroll.prompts import Prompt, remaining
from asr_app.enroll.quality import QualityOptions, TakeReport, check_take
from asr_app.enroll.recorder import RecorderOptions, TakeRecorder, TakeState


@dataclass
class TakeOutcome:
    """What happened to a finished recording: the checks, and the take if it was kept."""

    prompt: Prompt
    report: TakeReport
    take: Take | None


@dataclass(frozen=True)
class Progress:
    """Progress toward the target.

    Attributes:
        kept_hours: audio kept, hours.
        takes, heldout_takes, sessions: counts.
        target_hours: the enrollment target.
        recording_wall_s: time spent recording takes so far, seconds (this session included):
            each take from the end of the one before to its own end, takes in which no
            speech was heard left out, so idle time with the screen open does not count.
        session_kept_s, session_wall_s: this session's kept audio and recording time, seconds.
    """

    kept_hours: float
    takes: int
    heldout_takes: int
    sessions: int
    target_hours: float
    recording_wall_s: float = 0.0
    session_kept_s: float = 0.0
    session_wall_s: float = 0.0

    @property
    def pace(self) -> float:
        """Hours of audio kept per hour spent recording (0 when unknown)."""
        return self.kept_hours * 3600 / self.recording_wall_s if self.recording_wall_s > 60 else 0.0

    @property
    def hours_to_go(self) -> float:
        return max(0.0, self.target_hours - self.kept_hours)

    @property
    def recording_hours_to_go(self) -> float | None:
        """Hours of recording sessions still needed at the pace so far (None: unknown)."""
        return self.hours_to_go / self.pace if self.pace > 0 else None

    def summary(self) -> str:
        """One line: kept, takes, sessions, pace, time to go."""

        def hm(hours: float) -> str:
            m = round(hours * 60)
            return f"{m // 60} h {m % 60:02d} min" if m >= 60 else f"{m} min"

        togo = self.recording_hours_to_go
        pace = (
            f"; pace {self.pace:.2f} h kept per hour recorded, about {hm(togo)} of recording to go"
            if togo is not None and self.hours_to_go
            else ""
        )
        this = (
            f"; this session {hm(self.session_kept_s / 3600)} kept in {hm(self.session_wall_s / 3600)}"
            if self.session_wall_s
            else ""
        )
        return (
            f"{hm(self.kept_hours)} of {self.target_hours:g} h kept ({100 * self.kept_hours / self.target_hours:.1f}%), "
            f"{self.takes} takes ({self.heldout_takes} held out), {self.sessions} session(s), "
            f"{hm(self.hours_to_go)} to go{pace}{this}"
        )


def profile_progress(
    profile: Profile, target_hours: float, session_kept_s: float = 0.0, session_wall_s: float = 0.0
) -> Progress:
    """Progress of a profile toward `target_hours` (a running session's figures added)."""
    takes = profile.takes()
    meta = profile.meta()
    return Progress(
        sum(t.duration_s for t in takes) / 3600,
        len(takes),
        sum(t.split == "heldout" for t in takes),
        int(meta.get("sessions", 0)),
        target_hours,
        float(meta.get("recording_wall_s", 0.0)) + session_wall_s,
        session_kept_s,
        session_wall_s,
    )


class EnrollSession:
    """Drives one recording session over a profile.

    Args:
        profile: the profile to add takes to.
        prompts: prompts in reading order; those already recorded or skipped are passed over.
        transcribe: audio -> text with the current model, for the misreading check (None: off).
        quality: take check thresholds.
        recorder_options: when takes start and stop.
        target_hours: enrollment target for progress figures.
        source: label stored with each take ("mic" or "file:<name>").
    """

    def __init__(
        self,
        profile: Profile,
        prompts: list[Prompt],
        transcribe: Callable[[np.ndarray], str] | None = None,
        quality: QualityOptions = QualityOptions(),
        recorder_options: RecorderOptions = RecorderOptions(),
        target_hours: float = 8.0,
        source: str = "mic",
    ):
        self.profile = profile
        self.transcribe = transcribe
        self.quality = quality
        self.recorder_options = recorder_options
        self.target_hours = target_hours
        self.source = source
        self.session_number: int | None = None  # counted at the first take kept
        skipped = set(profile.meta().get("skipped_prompts", []))
        self._queue = list(remaining(prompts, profile.done_prompt_ids() | skipped))
        self.current: Prompt | None = self._queue.pop(0) if self._queue else None
        self.recorder = TakeRecorder(recorder_options)
        self.last_take: Take | None = None
        self.last_outcome: TakeOutcome | None = None
        self._replaces: int | None = None
        self._kept_s = 0.0
        self._recording_s = 0.0  # time spent on takes in which speech was heard, seconds

    # -- recording -------------------------------------------------------------------------
    def insert_audio(self, chunk: np.ndarray) -> TakeOutcome | None:
        """Feed microphone audio; returns an outcome when a take has just finished."""
        if self.current is None:
            return None
        if self.recorder.insert_audio(chunk) is TakeState.DONE:
            return self.finish_take()
        return None

    def stop_take(self) -> TakeOutcome | None:
        """End the current take now (key press) and check it."""
        if self.current is None:
            return None
        self.recorder.stop()
        return self.finish_take()

    def finish_take(self) -> TakeOutcome:
        """Check the recorded take; keep it (saved crash-safely) and move on if it passes."""
        prompt = self.current
        audio = self.recorder.audio()
        report = check_take(audio, prompt.text, self.quality, self.transcribe, cut_off=self.recorder.cut_off)
        if self.recorder.heard_speech:  # idle time (no speech, a timed-out wait) is no recording time
            self._recording_s += self.recorder.duration_s
        take = None
        if report.accepted:
            if self.session_number is None:
                self.session_number = self.profile.begin_session()
            take = self.profile.add_take(
                audio, prompt.text, prompt.id, self.session_number, replaces=self._replaces, source=self.source
            )
            self._kept_s += take.duration_s
            self.last_take = take
            self._replaces = None
            self._advance()
        self.recorder = TakeRecorder(self.recorder_options)
        self.last_outcome = TakeOutcome(prompt, report, take)
        return self.last_outcome

    def discard_take(self) -> None:
        """Throw away what is being recorded and start the take again."""
        self.recorder = TakeRecorder(self.recorder_options)

    # -- user actions ----------------------------------------------------------------------
    def skip(self) -> None:
        """Skip the current prompt for good (it is not offered again in later sessions)."""
        if self.current is None:
            return
        meta = self.profile.meta()
        skipped = list(dict.fromkeys(meta.get("skipped_prompts", []) + [self.current.id]))
        self.profile.update_meta(skipped_prompts=skipped)
        self._replaces = None
        self._advance()
        self.discard_take()

    def rerecord_last(self) -> bool:
        """Read the last kept take's prompt again; the new take replaces it. False if none."""
        if self.last_take is None:
            return False
        if self.current is not None:
            self._queue.insert(0, self.current)
        self.current = Prompt(self.last_take.prompt_id, self.last_take.text)
        self._replaces = self.last_take.take_id
        self.last_take = None
        self.discard_take()
        return True

    def flag_last(self) -> Take | None:
        """Mark the last kept take as doubtful (kept, excluded from training)."""
        if self.last_take is None or self.last_take.flagged:
            return None
        self.last_take = self.profile.set_flag(self.last_take)
        return self.last_take

    def _advance(self) -> None:
        self.current = self._queue.pop(0) if self._queue else None

    # -- progress --------------------------------------------------------------------------
    def progress(self) -> Progress:
        """Progress including this session's pace."""
        return profile_progress(self.profile, self.target_hours, self._kept_s, self._recording_s)

    def close(self) -> None:
        """Add this session's recording time to profile.json and refresh the totals (a
        profile that was never written stays unwritten)."""
        if not self.profile.exists():
            return
        wall = float(self.profile.meta().get("recording_wall_s", 0.0)) + self._recording_s
        self.profile.update_meta(recording_wall_s=round(wall, 1))


class Command:
    """What the user can ask for while the session runs (put on the command queue)."""

    STOP = "stop"  # end the current take now
    SKIP = "skip"
    RERECORD = "rerecord"
    FLAG = "flag"
    QUIT = "quit"


def run_session(
    session: EnrollSession, source, on_event: Callable[[str, object], None], commands=None, level_every_s: float = 0.1
) -> str:
    """Read `source` into `session` until the input ends, the prompts run out, or QUIT.

    Events passed to `on_event(kind, payload)`: ("level", dBFS), ("take", TakeOutcome),
    ("prompt", Prompt or None), ("info", str). Commands (Command.*) are taken from the
    `commands` queue between chunks, so only this thread touches the session.

    Returns:
        Why it ended: "quit", "input ended" or "prompts done".
    """
    import queue

    source.start()
    on_event("prompt", session.current)
    last_level = 0.0
    try:
        while True:
            while commands is not None:
                try:
                    cmd = commands.get_nowait()
                except queue.Empty:
                    break
                if cmd == Command.QUIT:
                    return "quit"
                if cmd == Command.STOP:
                    outcome = session.stop_take()
                    if outcome:
                        on_event("take", outcome)
                elif cmd == Command.SKIP:
                    session.skip()
                    on_event("info", "skipped")
                elif cmd == Command.RERECORD:
                    on_event(
                        "info",
                        "read the last sentence again" if session.rerecord_last() else "no kept take to re-record yet",
                    )
                elif cmd == Command.FLAG:
                    on_event("info", "last take flagged" if session.flag_last() else "nothing to flag")
                on_event("prompt", session.current)
            if session.current is None:
                return "prompts done"
            chunk = source.read(0.1)
            if chunk is None:
                if session.recorder.heard_speech:
                    on_event("take", session.stop_take())
                return "input ended"
            if len(chunk) == 0:
                continue
            outcome = session.insert_audio(chunk)
            now = time.monotonic()
            if now - last_level >= level_every_s:
                on_event("level", session.recorder.level_dbfs)
                last_level = now
            if outcome is not None:
                on_event("take", outcome)
                on_event("prompt", session.current)
    finally:
        source.close()
        session.close()
