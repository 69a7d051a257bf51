"""Writing files atomically, and the transcript writers (txt, srt, vtt, json, tsv)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from asr_app.files import current_umask

if TYPE_CHECKING:
    from asr_app.transcribe import Transcript

FORMATS = ("txt", "srt", "vtt", "json", "tsv")


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def new_file_mode(path: Path) -> int:
    """The permission bits a plain `open(path, "w")` would give: the existing file's own,
    else 0o666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w"):
    """Open a temporary file beside `path`; on success fsync it and rename it onto `path`.

    A crash leaves either the old file or the new one, never half of one; on an exception
    the temporary file is removed. The file gets the mode an ordinary write would give it
    (the umask's, or the replaced file's), not the temporary file's private 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, new_file_mode(path))
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (see `atomic_open`)."""
    with atomic_open(path) as f:
        f.write(text)


def write_flac_atomic(path: Path, audio: np.ndarray, sample_rate_hz: int = 16_000) -> None:
    """Write (samples,) float32 audio as 16-bit FLAC atomically, clipped to [-1, 1]."""
    import soundfile as sf

    with atomic_open(path, "wb") as f:
        sf.write(f, np.clip(audio, -1.0, 1.0), sample_rate_hz, format="FLAC", subtype="PCM_16")


def _clock(t_s: float, sep: str) -> str:
    ms = int(round(t_s * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def format_txt(t: Transcript) -> str:
    """One line per segment."""
    return "".join(s.text.strip() + "\n" for s in t.segments)


def format_srt(t: Transcript) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`."""
    cues = [
        f"{i}\n{_clock(s.start_s, ',')} --> {_clock(s.end_s, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(t.segments, 1)
    ]
    return "\n".join(cues)


def format_vtt(t: Transcript) -> str:
    """WebVTT: header then `HH:MM:SS.mmm --> HH:MM:SS.mmm` cues."""
    cues = [f"{_clock(s.start_s, '.')} --> {_clock(s.end_s, '.')}\n{s.text.strip()}\n" for s in t.segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def format_tsv(t: Transcript) -> str:
    """Tab-separated `start_ms end_ms text`, as openai-whisper writes it."""
    rows = ["start\tend\ttext"]
    rows += [
        f"{round(s.start_s * 1000)}\t{round(s.end_s * 1000)}\t{s.text.strip().replace(chr(9), ' ')}" for s in t.segments
    ]
    return "\n".join(rows) + "\n"


def format_json(t: Transcript) -> str:
    """Metadata (model, duration, RTF, language) and segments with start/end seconds."""
    return json.dumps(t.to_dict(), indent=2, ensure_ascii=False) + "\n"


WRITERS = {"txt": format_txt, "srt": format_srt, "vtt": format_vtt, "json": format_json, "tsv": format_tsv}


def output_paths(stem: Path, formats: tuple[str, ...]) -> list[Path]:
    """`stem` with each format's extension appended (stem has no extension)."""
    return [stem.with_name(stem.name + "." + f) for f in formats]


def write_transcript(t: Transcript, stem: Path, formats: tuple[str, ...]) -> list[Path]:
    """Write `t` in every format to `<stem>.<format>`; returns the paths written."""
    paths = output_paths(stem, formats)
    for fmt, path in zip(formats, paths):
        atomic_write_text(path, WRITERS[fmt](t))
    return paths
