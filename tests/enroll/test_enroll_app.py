"""The enroll screen driven by Pilot with file-backed audio: record, re-record, skip, quit, resume."""

import asyncio

import numpy as np
import pytest

from asr_app.audio import load_audio
from asr_app.datasets import load_dataset
from asr_app.enroll.profile import Profile
from asr_app.enroll.prompts import Prompt
from asr_app.enroll.session import EnrollSession
from asr_app.sources import FileSource, QueueSource
from tests.conftest import LJSPEECH, require_data

GAP = np.zeros(16_000, np.float32)


@pytest.fixture(scope="module")
def clips():
    require_data(LJSPEECH)
    utts = load_dataset(LJSPEECH, "LJ001-00[1-3]*")[:6]
    return [(Prompt(f"lj:{u.id}", u.text), load_audio(u.audio)) for u in utts]


async def _wait(pilot, cond, timeout_s=60.0):
    for _ in range(int(timeout_s / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError("timed out waiting for the app")


def test_record_rerecord_skip_quit_and_resume(tmp_path, clips, transcriber):
    from asr_app.tui.enroll_app import EnrollApp

    prompts = [p for p, _ in clips]
    audio = {p.id: a for p, a in clips}
    check = lambda a: transcriber.transcribe_audio(a).text  # noqa: E731
    profile = Profile.create_or_open(tmp_path / "prof", "lj")
    source = QueueSource()
    session = EnrollSession(profile, prompts, check, source="test")
    played = []
    app = EnrollApp(session, source, player=played.append)

    async def scenario():
        async with app.run_test() as pilot:
            # record the first sentence
            source.push(np.concatenate([GAP, audio[prompts[0].id], GAP]))
            await _wait(pilot, lambda: len(app.outcomes) == 1)
            assert app.outcomes[0].take is not None, app.outcomes[0].report.summary()
            assert str(app.query_one("#prompt").render()) == prompts[1].text
            await pilot.press("p")
            await _wait(pilot, lambda: len(played) == 1)
            # re-record it: the prompt comes back and the new take replaces the old one
            await pilot.press("r")
            await _wait(pilot, lambda: str(app.query_one("#prompt").render()) == prompts[0].text)
            source.push(np.concatenate([GAP, audio[prompts[0].id], GAP]))
            await _wait(pilot, lambda: len(app.outcomes) == 2)
            assert app.outcomes[1].take.replaces == app.outcomes[0].take.take_id
            # a misread: the audio of sentence 3 for prompt 2 is rejected and not saved
            source.push(np.concatenate([GAP, audio[prompts[2].id], GAP]))
            await _wait(pilot, lambda: len(app.outcomes) == 3)
            assert app.outcomes[2].take is None and "misread" in app.outcomes[2].report.summary()
            assert "misread" in str(app.query_one("#status").render())
            # skip prompt 2, read prompt 3
            await pilot.press("s")
            await _wait(pilot, lambda: str(app.query_one("#prompt").render()) == prompts[2].text)
            source.push(np.concatenate([GAP, audio[prompts[2].id], GAP]))
            await _wait(pilot, lambda: len(app.outcomes) == 4)
            assert app.outcomes[3].take is not None
            await pilot.press("f")
            await _wait(pilot, lambda: "flagged" in str(app.query_one("#status").render()))
            await pilot.press("q")
            await _wait(pilot, lambda: app.ended == "quit")

    asyncio.run(scenario())
    takes = profile.takes()
    assert [t.prompt_id for t in takes] == [prompts[0].id, prompts[2].id]
    assert takes[1].flagged
    assert prompts[1].id in profile.meta()["skipped_prompts"]

    # resume: a new session starts at the first prompt neither recorded nor skipped
    resumed = EnrollSession(profile, prompts, None, source="test")
    assert resumed.current == prompts[3]
    assert profile.meta()["sessions"] == 1  # a session counts once it keeps a take
    outcome = resumed.insert_audio(np.concatenate([GAP, audio[prompts[3].id], GAP])) or resumed.stop_take()
    assert outcome.take is not None, outcome.report.summary()
    assert resumed.stop_take().take is None  # stopping an empty take keeps nothing and does not crash
    assert profile.meta()["sessions"] == 2


def test_file_backed_source_records_every_sentence(tmp_path, clips):
    import soundfile as sf

    from asr_app.tui.enroll_app import EnrollApp

    prompts = [p for p, _ in clips[:3]]
    path = tmp_path / "reading.flac"
    sf.write(path, np.concatenate([GAP] + [np.concatenate([a, GAP, GAP]) for _, a in clips[:3]]), 16_000)
    profile = Profile.create_or_open(tmp_path / "prof", "lj")
    session = EnrollSession(profile, prompts, None, source="file")
    app = EnrollApp(session, FileSource(path, speed=0))

    async def scenario():
        async with app.run_test() as pilot:
            await _wait(pilot, lambda: app.ended is not None)
            assert "prompts done" in str(app.query_one("#state").render()) or app.ended == "prompts done"
            await pilot.press("q")

    asyncio.run(scenario())
    assert [t.prompt_id for t in profile.takes()] == [p.id for p in prompts]
    assert all(o.take is not None for o in app.outcomes)
