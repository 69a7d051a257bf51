"""The enrollment screen: the sentence to read, a live level meter, each take's verdict.

Recording runs in a Textual thread worker (`run_session`), which posts events as messages;
key presses go to it through a command queue, so the UI thread never waits on audio or
the model. Built from its collaborators (session, source, player) so tests inject a
file-backed source and drive it with Pilot.
"""

from __future__ import annotations

import queue
from collections.abc import Callable

import numpy as np
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Footer, Header, Static

from asr_app.enroll.session import Command, EnrollSession, run_session

METER_FLOOR_DBFS = -60.0
METER_WIDTH = 40


class SessionEvent(Message):
    """An event from the recording worker (see `run_session`)."""

    def __init__(self, kind: str, payload: object):
        super().__init__()
        self.kind = kind
        self.payload = payload


def level_bar(dbfs: float, width: int = METER_WIDTH) -> str:
    """A text meter of a level in dBFS from -60 (empty) to 0 (full)."""
    frac = min(1.0, max(0.0, (dbfs - METER_FLOOR_DBFS) / -METER_FLOOR_DBFS))
    n = round(frac * width)
    return "█" * n + "░" * (width - n) + f" {dbfs:6.1f} dBFS"


class EnrollApp(App):
    """Textual app for one enrollment session.

    Args:
        session: the EnrollSession to drive.
        source: an AudioSource (microphone or file).
        player: plays a take's audio (default: the sound card through sounddevice).
    """

    TITLE = "asr-app enroll"
    CSS = """
    #prompt { padding: 1 2; border: round $accent; text-style: bold; min-height: 5; }
    #progress, #meter, #status, #state { padding: 0 2; }
    #status { min-height: 3; }
    """
    BINDINGS = [
        Binding("space", "stop_take", "Stop take now"),
        Binding("r", "rerecord", "Re-record last"),
        Binding("s", "skip", "Skip sentence"),
        Binding("f", "flag", "Flag last"),
        Binding("p", "play", "Play last"),
        Binding("q", "quit_session", "Save & quit"),
    ]

    def __init__(self, session: EnrollSession, source, player: Callable[[np.ndarray], None] | None = None):
        super().__init__()
        self.session = session
        self.source = source
        self.player = player
        self.commands: queue.Queue[str] = queue.Queue()
        self.ended: str | None = None
        self.outcomes = []  # every TakeOutcome, in order (for the UI and tests)

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical():
            yield Static("", id="progress")
            yield Static("Read this sentence aloud:", id="state")
            yield Static("", id="prompt")
            yield Static(level_bar(METER_FLOOR_DBFS), id="meter")
            yield Static("", id="status")
        yield Footer()

    def on_mount(self) -> None:
        self._show_progress()
        self.run_worker(self._record, thread=True, exclusive=True, name="recording")

    def _record(self) -> None:
        try:
            why = run_session(
                self.session, self.source, lambda k, p: self.post_message(SessionEvent(k, p)), self.commands
            )
        except Exception as e:  # surface device errors instead of a dead screen
            why = f"error: {e}"
        self.post_message(SessionEvent("ended", why))

    # -- events from the worker -----------------------------------------------------------
    def on_session_event(self, event: SessionEvent) -> None:
        kind, payload = event.kind, event.payload
        if kind == "level":
            self.query_one("#meter", Static).update(level_bar(payload))
        elif kind == "prompt":
            text = payload.text if payload is not None else "(no more sentences: press q)"
            self.query_one("#prompt", Static).update(text)
        elif kind == "take":
            self.outcomes.append(payload)
            style = "green" if payload.take else "red"
            self.query_one("#status", Static).update(f"[{style}]{payload.report.summary()}[/]")
            self._show_progress()
        elif kind == "info":
            self.query_one("#status", Static).update(str(payload))
            self._show_progress()
        elif kind == "ended":
            self.ended = payload
            if payload == "quit":
                self.exit(payload)
            else:
                self.query_one("#state", Static).update(f"Session ended ({payload}). Press q to quit.")

    def _show_progress(self) -> None:
        self.query_one("#progress", Static).update(self.session.progress().summary())

    # -- key actions ----------------------------------------------------------------------
    def action_stop_take(self) -> None:
        self.commands.put(Command.STOP)

    def action_rerecord(self) -> None:
        self.commands.put(Command.RERECORD)

    def action_skip(self) -> None:
        self.commands.put(Command.SKIP)

    def action_flag(self) -> None:
        self.commands.put(Command.FLAG)

    def action_play(self) -> None:
        take = self.session.last_take
        if take is None:
            self.query_one("#status", Static).update("no kept take to play yet")
            return
        import soundfile as sf

        audio, _ = sf.read(self.session.profile.path / take.audio, dtype="float32")
        try:
            (self.player or _default_player)(audio)
            self.query_one("#status", Static).update(f"playing take {take.take_id} ({take.duration_s:.1f} s)")
        except Exception as e:
            self.query_one("#status", Static).update(f"cannot play: {e}")

    def action_quit_session(self) -> None:
        if self.ended is not None:
            self.exit(self.ended)
        else:
            self.commands.put(Command.QUIT)


def _default_player(audio: np.ndarray) -> None:
    from asr_app.tui.microphone import play

    play(audio)
