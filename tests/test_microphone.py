"""The real microphone path (sounddevice, PortAudio, PulseAudio) on a virtual microphone.

A PulseAudio null sink stands in for the sound card: `paplay` plays real speech into it and
its monitor is the default input, so `MicrophoneSource` records what was played. `.ci/run`
installs `pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins` and starts the
daemon, and sets ASR_APP_REQUIRE_MIC=1 so these tests fail there rather than skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from asr_app.audio import load_audio
from asr_app.datasets import load_dataset
from asr_app.wer import corpus_wer, normalize
from tests.conftest import JFK, LJSPEECH, REPO, require_data

# One virtual microphone for the machine: with parallel test workers (pytest-xdist,
# --dist loadgroup) these tests all run on the same worker, one after another.
pytestmark = pytest.mark.xdist_group("microphone")

JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
JFK_WORDS = "what your country can do for you ask what you can do for your country"


def _heard_jfk(text: str) -> bool:
    """The speech came through: its last 14 words, and at most a quarter of all in error
    (the microphone path resamples, so tiny.en may mishear a word as 'asked' or 'am I')."""
    return JFK_WORDS in normalize(text) and corpus_wer([JFK_TEXT], [text]).wer <= 0.25


def _pactl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=20)


@pytest.fixture(scope="module")
def virtual_microphone():
    """A null sink `virt` whose monitor is the default source; skips (or fails under
    ASR_APP_REQUIRE_MIC=1) where PulseAudio or PortAudio is not installed."""
    problem = None
    if not shutil.which("pactl") or not shutil.which("paplay"):
        problem = "pulseaudio-utils not installed"
    else:
        if _pactl("info").returncode != 0 and shutil.which("pulseaudio"):
            subprocess.run(["pulseaudio", "-D", "--exit-idle-time=-1"], capture_output=True, timeout=20)
            time.sleep(1.0)
        if _pactl("info").returncode != 0:
            problem = "no PulseAudio server"
        else:
            if "virt" not in _pactl("list", "short", "sinks").stdout:
                _pactl("load-module", "module-null-sink", "sink_name=virt")
            _pactl("set-default-sink", "virt")
            _pactl("set-default-source", "virt.monitor")
            try:
                import sounddevice  # noqa: F401  (needs libportaudio2)
            except OSError:
                problem = "libportaudio2 not installed"
    if problem:
        if os.environ.get("ASR_APP_REQUIRE_MIC"):
            pytest.fail(f"virtual microphone unavailable: {problem}")
        pytest.skip(f"virtual microphone unavailable: {problem}")
    return "virt"


def _play(path, delay_s: float = 1.0) -> subprocess.Popen:
    """Play a file into the virtual sink after `delay_s` (the listener opens the input first)."""
    return subprocess.Popen(["sh", "-c", f"sleep {delay_s}; exec paplay --device=virt '{path}'"])


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _sigint_default() -> None:
    """Run in the child before exec: a shell's background job (`cmd &` without job control)
    starts with SIGINT ignored, and a Python started so never turns the test's SIGINT into
    KeyboardInterrupt; the command under test must see it as a user's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _asr_app(*args: str) -> subprocess.Popen:
    """`python -m asr_app ARGS` with its stdout and stderr piped, Ctrl-C deliverable."""
    return subprocess.Popen(
        [sys.executable, "-m", "asr_app", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        preexec_fn=_sigint_default,
    )


def _wait_for_line(proc: subprocess.Popen, text: str, timeout_s: float = 300.0) -> list[str]:
    """Collect the process's stderr lines (in a thread) until one contains `text`; the list
    keeps growing until the process ends."""
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not any(text in line for line in lines):
        assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-2000:]
        time.sleep(0.1)
    return lines


def test_live_no_tui_transcribes_what_the_microphone_hears(virtual_microphone, tiny_onnx, tmp_path):
    require_data(JFK)
    proc = _asr_app("transcribe", "--live", "--no-tui", "--save-dir", str(tmp_path / "s"))
    err_lines = _wait_for_line(proc, "listening")  # the model is loaded and the microphone open
    player = _play(JFK, delay_s=0.5)
    player.wait(timeout=60)
    time.sleep(3.0)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)  # its output is a few lines: the pipe cannot fill before it ends
    out = proc.stdout.read()
    time.sleep(0.2)
    err = "".join(err_lines)
    assert proc.returncode == 0, err[-2000:]
    assert "stopped (Ctrl-C)" in err
    assert _heard_jfk(out), (out, err)
    assert _heard_jfk((tmp_path / "s" / "transcript.txt").read_text())
    assert len(load_audio(tmp_path / "s" / "audio.flac")) > 11 * 16_000  # the session's audio was kept


def test_enroll_records_takes_from_the_microphone(virtual_microphone, tmp_path):
    require_data(LJSPEECH)
    utts = load_dataset(LJSPEECH, "LJ001-000[1-3]")
    gap = np.zeros(int(1.6 * 16_000), np.float32)
    sf.write(
        tmp_path / "reading.wav",
        np.concatenate([gap] + [np.concatenate([load_audio(u.audio), gap]) for u in utts]),
        16_000,
    )
    (tmp_path / "prompts.txt").write_text("\n\n".join(u.text for u in utts) + "\n")
    profile = tmp_path / "prof"
    proc = _asr_app(
        "enroll",
        "--profile-dir",
        str(profile),
        "--no-tui",
        "--no-asr-check",
        "--prompts",
        str(tmp_path / "prompts.txt"),
    )
    player = _play(tmp_path / "reading.wav", delay_s=3.0)
    player.wait(timeout=120)
    time.sleep(2.0)
    if proc.poll() is None:  # all prompts read ends the session by itself; else stop it
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    from asr_app.enroll.profile import Profile

    takes = Profile.open(profile).takes()
    assert len(takes) == len(utts), (out, err)
    assert [t.text for t in takes] == [u.text for u in utts]
    for take, utt in zip(takes, utts):
        assert abs(take.duration_s - sf.info(str(utt.audio)).duration) < 1.5  # speech plus short rolls
    assert all(t.source == "mic" for t in takes)


def test_live_screen_on_the_microphone(virtual_microphone, tiny, tmp_path):
    from asr_app.live import LiveSession
    from asr_app.tui.live_app import LiveApp
    from asr_app.tui.microphone import MicrophoneSource

    require_data(JFK)
    app = LiveApp(LiveSession(tiny), MicrophoneSource(), save_dir=tmp_path / "saved")

    async def scenario():
        async with app.run_test() as pilot:
            player = _play(JFK, delay_s=0.5)
            loudest = -100.0
            for _ in range(600):
                meter = str(app.query_one("#meter").render())
                loudest = max(loudest, float(meter.split()[-2]))
                if _heard_jfk(str(app.query_one("#transcript").render())):
                    break
                await pilot.pause(0.1)
            assert _heard_jfk(str(app.query_one("#transcript").render()))
            assert loudest > -40  # the level meter followed the microphone
            player.wait(timeout=30)
            await pilot.press("q")
            for _ in range(300):
                if app.saved_to is not None:
                    break
                await pilot.pause(0.1)

    asyncio.run(scenario())
    assert _heard_jfk((tmp_path / "saved" / "transcript.txt").read_text())
    assert json.loads((tmp_path / "saved" / "transcript.json").read_text())["words"]
