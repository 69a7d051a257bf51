"""Labelled speech sets: LibriSpeech, LJSpeech and the project's JSON-lines manifest.

Manifest format (one JSON object per line, UTF-8):

    {"audio": "takes/0001.flac", "text": "Exact words read.", "speaker": "lj", "duration_s": 4.21}

`audio` is relative to the manifest's folder (absolute paths are accepted); `id` is
optional (defaults to the audio path). Enrollment writes this format with extra fields
(`take_id`, `split` "train"/"heldout", `replaces`, `flagged`, ...); `eval` reads it, drops
takes that a later line replaces, and can keep one split.
"""

from __future__ import annotations

import csv
import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from asr_app.audio import AUDIO_EXTENSIONS
from asr_app.errors import DatasetError

# the corpora's own formats first, then anything else the audio reader takes
_AUDIO_ORDER = (".flac", ".wav", *sorted(AUDIO_EXTENSIONS - {".flac", ".wav"}))


def _find_audio(folder: Path, stem: str) -> Path | None:
    """`folder/stem.<ext>` for the first audio extension that exists, or None."""
    return next((p for ext in _AUDIO_ORDER if (p := folder / f"{stem}{ext}").is_file()), None)


@dataclass(frozen=True)
class Utterance:
    """One labelled recording. duration_s is 0.0 when the source does not say."""

    id: str
    audio: Path
    text: str
    speaker: str
    duration_s: float = 0.0


def read_librispeech(root: Path) -> list[Utterance]:
    """`<speaker>/<chapter>/<speaker>-<chapter>.trans.txt` with `<id> <TEXT>` lines; each id's
    audio beside it as `<id>.flac` (LibriSpeech's own) or any other audio extension, e.g. `.wav`."""
    out = []
    for trans in sorted(root.rglob("*.trans.txt")):
        for line in trans.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            audio = _find_audio(trans.parent, uid)
            if audio is None:
                raise DatasetError(
                    f"{trans}: audio for {uid} listed but missing (looked for {uid}.flac, "
                    f"{uid}.wav, ... beside it): restore the file or remove its line"
                )
            out.append(Utterance(uid, audio, text, uid.split("-")[0]))
    return out


def read_ljspeech(root: Path) -> list[Utterance]:
    """`metadata.csv` (`ID|raw text|normalized text`) and `wavs/<ID>.(flac|wav|...)`; uses the normalized text."""
    out = []
    with open(root / "metadata.csv", encoding="utf-8", newline="") as f:
        for row in csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE):
            if not row:
                continue
            if len(row) < 2:
                raise DatasetError(f"{root / 'metadata.csv'}: bad row {row!r}")
            uid, text = row[0], row[2] if len(row) > 2 and row[2] else row[1]
            audio = _find_audio(root / "wavs", uid)
            if audio is None:
                raise DatasetError(f"{root}: audio for {uid} not found under wavs/")
            out.append(Utterance(uid, audio, text, "ljspeech"))
    return out


def read_manifest_rows(path: Path) -> list[dict]:
    """Every row of a JSON-lines manifest, in order, each with at least "audio" and "text".

    A last line cut off by a crash mid-append (invalid JSON, no final newline) is ignored;
    any other bad line is an error.

    Raises:
        DatasetError: unreadable file, or a bad line (with its number).
    """
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read manifest ({e})") from None
    lines = raw.splitlines()
    partial_last = bool(raw) and not raw.endswith("\n")
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row["audio"], row["text"]
        except (ValueError, KeyError, TypeError) as e:
            if n == len(lines) and partial_last and isinstance(e, ValueError):
                continue  # a last line cut off by a crash mid-append
            raise DatasetError(
                f'{path}:{n}: not a manifest line ({e}); expected {{"audio": ..., "text": ...}}'
            ) from None
        rows.append(row)
    return rows


def drop_replaced(rows: list[dict]) -> list[dict]:
    """Rows left once takes that a later row re-records (`"replaces": <take_id>`) are dropped."""
    replaced = {r["replaces"] for r in rows if r.get("replaces") is not None}
    return [r for r in rows if r.get("take_id") is None or r["take_id"] not in replaced]


def read_manifest(path: Path, split: str | None = None) -> list[Utterance]:
    """The project's JSON-lines manifest (see module docstring); `split` keeps one split only."""
    out = []
    for row in drop_replaced(read_manifest_rows(path)):
        if split is not None and row.get("split", "train") != split:
            continue
        audio = Path(row["audio"])
        audio = audio if audio.is_absolute() else path.parent / audio
        out.append(
            Utterance(
                str(row.get("id", row["audio"])),
                audio,
                row["text"],
                str(row.get("speaker", "")),
                float(row.get("duration_s", 0.0)),
            )
        )
    return out


def labelled_file(path: Path) -> Utterance | None:
    """A single audio file's utterance from the dataset files beside it, if any.

    Looks for the file's stem in a LibriSpeech-style `*.trans.txt` in its folder, in an
    LJSpeech `metadata.csv` one folder up (the file under `wavs/`), or for the file in the
    folder's `manifest.jsonl`. Returns None when none of them lists it.
    """
    path = Path(path)
    folder, stem = path.parent, path.stem
    for trans in sorted(folder.glob("*.trans.txt")):
        for line in trans.read_text(encoding="utf-8").splitlines():
            uid, _, text = line.strip().partition(" ")
            if uid == stem:
                return Utterance(uid, path, text, uid.split("-")[0])
    if folder.name == "wavs" and (folder.parent / "metadata.csv").is_file():
        return next((u for u in read_ljspeech(folder.parent) if u.id == stem), None)
    if (folder / "manifest.jsonl").is_file():
        return next((u for u in read_manifest(folder / "manifest.jsonl") if u.audio.resolve() == path.resolve()), None)
    return None


def load_dataset(
    path: str | Path, filter_glob: str | None = None, limit: int | None = None, split: str | None = None
) -> list[Utterance]:
    """Read a labelled set in any supported layout, detected from what is on disk.

    Args:
        path: a LibriSpeech-style folder, an LJSpeech folder, a manifest `.jsonl` file,
            a folder holding `manifest.jsonl`, or one audio file listed by the dataset
            files beside it (see `labelled_file`).
        filter_glob: keep utterances whose id matches (e.g. "LJ002-*").
        limit: keep the first N after filtering.
        split: for manifests, keep only rows of this split ("train", "heldout").
    Raises:
        DatasetError: nothing recognizable, or no utterance left after filtering.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() in (".jsonl", ".json"):
        utts = read_manifest(path, split)
    elif (path / "manifest.jsonl").is_file():
        utts = read_manifest(path / "manifest.jsonl", split)
    elif (path / "metadata.csv").is_file():
        utts = read_ljspeech(path)
    elif path.is_dir() and next(path.rglob("*.trans.txt"), None) is not None:
        utts = read_librispeech(path)
    elif not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    elif path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS:
        utt = labelled_file(path)
        if utt is None:
            raise DatasetError(
                f"{path}: no transcript of this file beside it (a *.trans.txt line "
                f"'{path.stem} TEXT', an LJSpeech metadata.csv or a manifest.jsonl)"
            )
        utts = [utt]
    else:
        raise DatasetError(
            f"{path}: not a dataset: expected LibriSpeech (*.trans.txt), LJSpeech (metadata.csv) or a manifest (.jsonl)"
        )
    if filter_glob:
        utts = [u for u in utts if fnmatch.fnmatchcase(u.id, filter_glob)]
    if limit is not None:
        utts = utts[:limit]
    if not utts:
        raise DatasetError(f"{path}: no utterances" + (f" match {filter_glob!r}" if filter_glob else ""))
    return utts
