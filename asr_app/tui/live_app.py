"""`transcribe --live`: committed text, dimmed tentative text, level meter, status, WER panel.

Streaming runs in a thread worker (`run_live`) that posts events; the UI thread never
waits on audio or the model. Built from its collaborators so tests inject a file source.
"""

from __future__ import annotations

import threading
from pathlib import Path

from rich.markup import escape
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Footer, Header, Sparkline, Static

from asr_app.live import LiveSession, run_live
from asr_app.tui.enroll_app import METER_FLOOR_DBFS, level_bar


def wer_panel_text(state, wer, shown: int = 8) -> str:
    """The WER panel: counts, the last words in error (red) and the last words missed.

    Args:
        state: LiveState after a commit; wer: the session's RunningWer.
        shown: how many of the latest errors of each kind are listed.
    """
    counts = state.wer_counts
    hyp, ref = wer.hypothesis_words, wer.reference_words
    text = (
        f"WER {100 * counts.wer:.1f}%  (S {counts.substitutions}, D {counts.deletions}, "
        f"I {counts.insertions} of {counts.reference_words} words read)"
    )
    if state.wrong_words:
        text += "   in error: " + ", ".join(f"[red]{escape(hyp[i])}[/]" for i in state.wrong_words[-shown:])
    if state.missed_words:
        text += "   missed: " + ", ".join(f"[yellow strike]{escape(ref[i])}[/]" for i in state.missed_words[-shown:])
    return text


class LiveEvent(Message):
    """An event from the streaming worker."""

    def __init__(self, kind: str, payload: object):
        super().__init__()
        self.kind = kind
        self.payload = payload


class LiveApp(App):
    """Live transcription screen.

    Args:
        session: a LiveSession.
        source: an AudioSource (microphone or file).
        save_dir: where to save the session on exit (None: a new folder under the data dir).
    """

    TITLE = "asr-app live"
    CSS = """
    #status, #meter, #wer { padding: 0 2; }
    #prompt { padding: 1 2; border: round $accent; text-style: bold; }
    #transcript-box { border: round $primary; height: 1fr; padding: 0 1; }
    #wer-plot { height: 3; margin: 0 2; }
    """
    BINDINGS = [Binding("q", "quit_live", "Save & quit")]

    def __init__(self, session: LiveSession, source, save_dir: Path | None = None):
        super().__init__()
        self.session = session
        self.source = source
        self.save_dir = save_dir
        self.stop = threading.Event()
        self.ended: str | None = None
        self.saved_to: Path | None = None
        self.updates = 0

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical():
            yield Static("", id="status")
            yield Static(level_bar(METER_FLOOR_DBFS), id="meter")
            if self.session.prompts:
                yield Static(self.session.current_prompt or "", id="prompt")
            with VerticalScroll(id="transcript-box"):
                yield Static("[dim](listening...)[/]", id="transcript")
            if self.session.tracks_wer:
                yield Static("WER: waiting for the first words", id="wer")
                yield Sparkline([], id="wer-plot")
        yield Footer()

    def on_mount(self) -> None:
        self._status()
        self.run_worker(self._stream, thread=True, exclusive=True, name="streaming")

    def _stream(self) -> None:
        try:
            why = run_live(self.session, self.source, lambda k, p: self.post_message(LiveEvent(k, p)), self.stop)
        except Exception as e:  # a device error ends the session visibly, not silently
            why = f"error: {e}"
        self.post_message(LiveEvent("ended", why))

    def on_live_event(self, event: LiveEvent) -> None:
        if event.kind == "level":
            self.query_one("#meter", Static).update(level_bar(event.payload))
        elif event.kind == "update":
            self.updates += 1
            self._show_text()
            self._status()
        elif event.kind == "ended":
            self.ended = event.payload
            self.saved_to = self.session.save(self.save_dir)
            if self.stop.is_set():
                self.exit(self.saved_to)
            else:
                self.query_one("#status", Static).update(
                    f"{event.payload}; session saved to {self.saved_to}. Press q to quit."
                )

    def _show_text(self) -> None:
        st = self.session.state
        text = escape(st.committed)
        if st.tentative:
            text += f" [dim]{escape(st.tentative)}[/]"
        self.query_one("#transcript", Static).update(text or "[dim](listening...)[/]")
        self.query_one("#transcript-box", VerticalScroll).scroll_end(animate=False)
        if self.session.prompts:
            self.query_one("#prompt", Static).update(self.session.current_prompt or "(all sentences read)")
        if st.wer_counts is not None:
            self.query_one("#wer", Static).update(wer_panel_text(st, self.session.wer))
            self.query_one("#wer-plot", Sparkline).data = [w for _, w in st.wer_points]

    def _status(self) -> None:
        st = self.session.state
        latency = f"{st.last_latency_s:.2f} s" if st.last_latency_s is not None else "-"
        self.query_one("#status", Static).update(
            f"model {self.session.bundle.name}   audio {self.session.stream.audio_s:6.1f} s   "
            f"RTF {self.session.rtf:.2f}   end-of-phrase latency {latency}"
        )

    def action_quit_live(self) -> None:
        if self.ended is not None:
            self.exit(self.saved_to)
        else:
            self.stop.set()
