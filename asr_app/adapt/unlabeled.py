"""Audio without transcripts as training data: the original model (the teacher) transcribes
it and recovery trains on its transcripts (sequence-level knowledge distillation, Kim and
Rush, "Sequence-Level Knowledge Distillation", EMNLP 2016; Whisper-specific use as in
Gandhi et al., "Distil-Whisper", 2023, which trains on the teacher's pseudo-labels).

`asr-app adapt --unlabeled DIR...`: every audio file under the folders (or the files named)
is transcribed once with the app's default decoding (silero-vad, greedy with temperature
fallback); the teacher's segments are grouped into clips of at most `MAX_CLIP_S` seconds,
written into the run folder (`unlabeled/`) beside a manifest of their texts, and packed into
training windows like the replay takes. Segments the teacher decoded only after a
temperature fallback are left out (it was unsure of them). The manifest is written after
each source file, so an interrupted run resumes where it stopped; an unreadable file is
reported and skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

MAX_CLIP_S = 28.0  # a clip plus its timestamps fits one 30-second window
MIN_CLIP_S = 0.5  # shorter clips (a timestamp past the audio's end) teach nothing
CLIP_FOLDER = "unlabeled"


def find_audio(paths: Iterable[str | Path], exclude: Iterable[str | Path] = ()) -> list[Path]:
    """The audio files named, or found (recursively, sorted) under the folders named, each
    once (a file named and also under a folder named counts once), absolute, without the
    files in `exclude` (a profile's takes: held-out takes must never be trained on).

    Raises:
        FileNotFoundError: a path that does not exist, or a folder without audio files.
    """
    from asr_app.audio import AUDIO_EXTENSIONS

    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
            if not files:
                raise FileNotFoundError(
                    f"--unlabeled {p}: no audio files in it ({', '.join(sorted(AUDIO_EXTENSIONS))})"
                )
            found += files
        else:
            raise FileNotFoundError(f"--unlabeled {p}: no such file or folder")
    skip = {Path(e).resolve() for e in exclude}
    unique = dict.fromkeys(f.resolve() for f in found)  # first occurrence kept, in order
    return [f for f in unique if f not in skip]


LIVE_SESSIONS = "sessions"  # a profile's live sessions: sessions/<time>/audio.flac + transcript.json


def live_sessions(profile_dir: Path) -> list[tuple[Path, float]]:
    """The live sessions recorded in a profile (`transcribe --live --profile`), oldest first:
    (`profile_dir/sessions/<time>/audio.flac`, its duration in seconds) for each one with
    audio and a transcript.json; sessions that replayed a file (`--input`, recorded in
    transcript.json: it may be a held-out take) are left out."""
    from asr_app.audio import audio_duration_s

    root = Path(profile_dir) / LIVE_SESSIONS
    found = []
    for f in sorted(root.glob("*/audio.flac")) if root.is_dir() else []:
        try:
            meta = json.loads((f.parent / "transcript.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # cut off before it was saved whole
        duration_s = audio_duration_s(f)  # 0.0: no samples, or unreadable
        if not meta.get("input") and duration_s > 0:
            found.append((f, duration_s))
    return found


def _source_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}"


def group_segments(segments, max_clip_s: float = MAX_CLIP_S) -> list[tuple[float, float, str]]:
    """Consecutive confident segments joined into clips of at most `max_clip_s` seconds.

    Args:
        segments: `transcribe.Segment`s in time order (seconds in the file).
    Returns:
        (start_s, end_s, text) per clip; a segment decoded at a temperature above 0 (a
        fallback), without text or longer than `max_clip_s` by itself ends the clip before
        it and is left out.
    """
    clips: list[tuple[float, float, str]] = []
    start = end = None
    texts: list[str] = []

    def close():
        if start is not None and texts:
            clips.append((start, end, " ".join(texts)))

    for seg in segments:
        text = seg.text.strip()
        usable = text and seg.temperature == 0.0 and seg.end_s - seg.start_s <= max_clip_s
        if not usable or start is None or seg.end_s - start > max_clip_s:
            close()
            start, end, texts = None, None, []
        if usable:
            if start is None:
                start = seg.start_s
            end = seg.end_s
            texts.append(text)
    close()
    return clips


def teacher_labelled(
    paths: Iterable[str | Path],
    bundle,
    folder: Path,
    on_progress: Callable[[int, int], None] | None = None,
    on_error: Callable[[Path, str], None] | None = None,
    exclude: Iterable[str | Path] = (),
):
    """Teacher-transcribed clips of the unlabeled audio under `paths`, as training utterances.

    Args:
        paths: folders (searched recursively) and audio files.
        bundle: the teacher's `WhisperBundle` (the base model, never the compressed one).
        folder: the run folder; clips and `unlabeled/manifest.jsonl` are written under it
            and read back on resume (a source file is transcribed once).
        on_progress: called with (files done, files) after each file.
        on_error: called with (file, reason) for each file that cannot be decoded; it is
            skipped and the others go on.
        exclude: files never to use (the profile's takes), as `find_audio`.
    Returns:
        (utterances, summary): `datasets.Utterance`s (clip path, the teacher's text,
        speaker "unlabeled", duration in seconds) and {"files", "failed", "clips", "minutes"}.
    Raises:
        FileNotFoundError: as `find_audio`.
    """
    import soundfile as sf

    from asr_app.audio import SAMPLE_RATE_HZ, AudioError, load_audio
    from asr_app.datasets import Utterance
    from asr_app.transcribe import TranscribeOptions, Transcriber

    files = find_audio(paths, exclude)
    out_dir = folder / CLIP_FOLDER
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.jsonl"
    done: dict[str, list[dict]] = {}
    if manifest.is_file():
        for line in manifest.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut off by an interruption: that file is transcribed again
            done[row["source"]] = row["clips"]
    transcriber = None
    failed = 0
    utts = []
    for n, path in enumerate(files, start=1):
        key = _source_key(path)
        if key not in done:
            if transcriber is None:
                transcriber = Transcriber(TranscribeOptions(), bundle=bundle)
            try:
                signal = load_audio(path)
            except AudioError as e:
                failed += 1
                if on_error:
                    on_error(path, str(e))
                continue
            segments = transcriber.transcribe_audio(signal).segments
            rows = []
            for k, (start, end, text) in enumerate(group_segments(segments)):
                clip = out_dir / f"{len(done):05d}-{k:03d}.flac"
                a, b = int(start * SAMPLE_RATE_HZ), min(len(signal), int(end * SAMPLE_RATE_HZ))
                if b - a < MIN_CLIP_S * SAMPLE_RATE_HZ:
                    continue
                sf.write(str(clip), signal[a:b], SAMPLE_RATE_HZ)
                rows.append({"audio": clip.name, "text": text, "duration_s": round((b - a) / SAMPLE_RATE_HZ, 3)})
            done[key] = rows
            with manifest.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"source": key, "clips": rows}) + "\n")
                f.flush()
                os.fsync(f.fileno())
        for k, row in enumerate(done[key]):
            utts.append(
                Utterance(f"unlabeled-{n}-{k}", out_dir / row["audio"], row["text"], "unlabeled", row["duration_s"])
            )
        if on_progress:
            on_progress(n, len(files))
    summary = {
        "files": len(files),
        "failed": failed,
        "clips": len(utts),
        "minutes": round(sum(u.duration_s for u in utts) / 60, 2),
    }
    return utts, summary
