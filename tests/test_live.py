"""Live transcription: running WER, the headless path, and the Textual screen under Pilot."""

import asyncio
import json

import numpy as np
import pytest

from asr_app.audio import load_audio
from asr_app.cli import main
from asr_app.datasets import load_dataset
from asr_app.live import LiveSession
from asr_app.sources import FileSource
from asr_app.streaming_bench import concatenate_clips
from asr_app.wer import RunningWer, normalize
from tests.conftest import JFK, LJSPEECH, require_data

JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def test_running_wer_counts_only_what_was_read():
    r = RunningWer()
    r.add_reference("the cat sat on the mat and then it slept all day")
    r.add_hypothesis("the cat sad on the mat")
    counts, wrong = r.score()
    assert (counts.substitutions, counts.deletions, counts.reference_words) == (
        1,
        0,
        6,
    )  # unread words are no deletions
    assert [r.hypothesis_words[i] for i in wrong] == ["sad"]
    r.add_hypothesis("and then it slept all day")
    assert r.score()[0].reference_words == 12


def test_live_no_tui_prints_committed_text_and_saves_the_session(tiny, tmp_path, capsys):
    require_data(JFK)
    ref = tmp_path / "ref.txt"
    ref.write_text(JFK_TEXT)
    code = main(
        [
            "transcribe",
            "--live",
            "--input",
            str(JFK),
            "--speed",
            "0",
            "--no-tui",
            "--reference",
            str(ref),
            "--save-dir",
            str(tmp_path / "s"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert normalize(out) == normalize(JFK_TEXT)
    assert "WER 0.00%" in err and "session saved" in err
    saved = tmp_path / "s"
    assert normalize((saved / "transcript.txt").read_text()) == normalize(JFK_TEXT)
    words = json.loads((saved / "transcript.json").read_text())["words"]
    assert len(words) == len(out.split()) and words[-1]["end_s"] <= 11.5
    assert json.loads((saved / "wer.json").read_text())["wer"] == 0.0
    assert abs(len(load_audio(saved / "audio.flac")) - 176_000) < 200


def test_a_profiles_live_sessions_are_kept_listed_and_become_unlabeled_audio(tiny, tmp_path, monkeypatch, capsys):
    """`transcribe --live --profile P` saves into P's sessions/; `profiles` counts the
    recorded ones and `adapt --live-sessions` hands their audio to the unlabeled input. A
    replayed file (`--input`, perhaps a held-out take) and a session without audio are left
    out, and a profile without sessions is told how to record one."""
    from asr_app.adapt.unlabeled import live_sessions
    from asr_app.cli import build_parser
    from asr_app.cli.adapt import _adapt_options
    from asr_app.enroll.profile import Profile, profiles_root

    require_data(JFK)
    monkeypatch.setenv("ASR_APP_DATA_DIR", str(tmp_path / "data"))
    spk = Profile.create_or_open(profiles_root() / "spk", speaker="spk")
    empty = Profile.create_or_open(profiles_root() / "empty", speaker="empty")
    for profile in (spk, empty):
        profile._ensure_written()  # an enrolled profile, without takes (none are needed here)
    argv = ["transcribe", "--live", "--input", str(JFK), "--speed", "0", "--no-tui", "--model", "tiny.en"]
    assert main(argv + ["--profile", "spk"]) == 0
    (replayed,) = (spk.path / "sessions").glob("*/audio.flac")
    assert json.loads((replayed.parent / "transcript.json").read_text())["input"] == str(JFK)
    assert live_sessions(spk.path) == []  # a replay is no recording of the user

    recorded = LiveSession(tiny, sessions_dir=spk.path / "sessions")  # as the microphone feeds it
    for chunk in np.array_split(load_audio(JFK), 40):
        recorded.insert_audio(chunk)
        recorded.process()
    recorded.finish()
    folder = recorded.save(spk.path / "sessions" / "recorded")
    LiveSession(tiny).save(spk.path / "sessions" / "silent")  # stopped at once: no samples
    assert [audio for audio, _ in live_sessions(spk.path)] == [folder / "audio.flac"]
    capsys.readouterr()
    assert main(["profiles"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["spk"][5:7] == ["1", "0.2"] and rows["empty"][5:7] == ["0", "0.0"]  # live sessions, minutes

    args = build_parser().parse_args(["adapt", "--profile", "spk", "--live-sessions", "--unlabeled", str(JFK)])
    assert _adapt_options(args, spk).unlabeled == (str(JFK.resolve()), str((folder / "audio.flac").resolve()))
    assert _adapt_options(build_parser().parse_args(["adapt", "--profile", "spk"]), spk).unlabeled == ()
    with pytest.raises(
        ValueError, match="no recorded live sessions yet; run `asr-app transcribe --live --profile empty`"
    ):
        _adapt_options(build_parser().parse_args(["adapt", "--profile", "empty", "--live-sessions"]), empty)


def test_live_screen_shows_text_and_wer_and_saves_on_quit(tiny, tmp_path):
    import soundfile as sf

    from asr_app.tui.live_app import LiveApp

    require_data(LJSPEECH)
    utts = load_dataset(LJSPEECH, "LJ002-000[1-3]")
    audio, _ = concatenate_clips([load_audio(u.audio) for u in utts])
    sf.write(tmp_path / "reading.flac", audio, 16_000)
    session = LiveSession(tiny, reference=" ".join(u.text for u in utts))
    app = LiveApp(session, FileSource(tmp_path / "reading.flac", speed=0), save_dir=tmp_path / "saved")

    async def scenario():
        async with app.run_test() as pilot:
            for _ in range(3600):  # up to 180 s: the whole file decodes on a busy 2-core machine
                if app.ended is not None:
                    break
                await pilot.pause(0.05)
            assert app.ended == "input ended"
            shown = str(app.query_one("#transcript").render())
            assert "chronicles of newgate" in shown.lower()
            assert str(app.query_one("#wer").render()).startswith("WER ")
            assert len(app.query_one("#wer-plot").data) >= 2  # the plot moved as words committed
            await pilot.press("q")

    asyncio.run(scenario())
    assert (tmp_path / "saved" / "transcript.txt").exists() and (tmp_path / "saved" / "wer.json").exists()
    assert json.loads((tmp_path / "saved" / "wer.json").read_text())["wer"] < 15


@pytest.mark.parametrize("missing", ["sounddevice", "input device"])
def test_live_without_microphone_is_one_clear_line(tiny, capsys, monkeypatch, missing, request):
    """Where the machine has a microphone (CI's virtual one), take it away: no sounddevice
    module, or no input device to open (the `no_microphone` fixture)."""
    import sys

    if missing == "sounddevice":
        monkeypatch.setitem(sys.modules, "sounddevice", None)  # import raises ImportError
    else:
        request.getfixturevalue("no_microphone")
    assert main(["transcribe", "--live", "--no-tui"]) == 1
    err = capsys.readouterr().err
    assert "--input FILE" in err and "Traceback" not in err
    assert ("sounddevice is not installed" if missing == "sounddevice" else "no usable microphone") in err


def test_read_along_advances_prompts_and_measures_latency(tiny):
    from asr_app.live import run_live

    require_data(JFK)
    prompts = [
        "And so my fellow Americans,",
        "ask not what your country can do for you,",
        "ask what you can do for your country.",
        "Thank you.",
    ]
    session = LiveSession(tiny, prompts=prompts)
    run_live(session, FileSource(JFK, speed=0), lambda kind, payload: None)
    assert session.prompt_index >= 2  # each phrase end moved to the next sentence
    counts, _ = session.wer.score()
    assert counts.reference_words >= 15 and counts.wer < 0.1
    assert session.state.last_latency_s is not None and session.state.last_latency_s > 0


def test_wer_panel_lists_the_words_missed_as_well_as_the_wrong_ones():
    from asr_app.live import LiveState
    from asr_app.tui.live_app import wer_panel_text

    r = RunningWer()
    r.add_reference("the cat sat on the mat and then it slept all day")
    r.add_hypothesis("the cat sad on the and then it slept")
    errors = r.errors()
    assert (errors.counts.substitutions, errors.counts.deletions) == (1, 1)
    assert [r.reference_words[i] for i in errors.missed] == ["mat"]
    assert [r.hypothesis_words[i] for i in errors.wrong] == ["sad"]
    state = LiveState(wer_counts=errors.counts, wrong_words=errors.wrong, missed_words=errors.missed)
    text = wer_panel_text(state, r)
    assert "D 1" in text and "missed: " in text and "mat" in text.split("missed: ")[1]
    assert "sad" in text.split("in error: ")[1]


def test_live_session_saves_the_missed_words(tiny, tmp_path):
    require_data(JFK)
    session = LiveSession(tiny, reference="Thank you all. " + JFK_TEXT)
    from asr_app.live import run_live

    run_live(session, FileSource(JFK, speed=0), lambda kind, payload: None)
    assert session.state.missed_words and session.wer.reference_words[session.state.missed_words[0]] == "thank"
    saved = json.loads((session.save(tmp_path / "s") / "wer.json").read_text())
    assert saved["words_missed"][:3] == ["thank", "you", "all"]
