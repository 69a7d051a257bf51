"""A speaker's enrollment profile: takes as FLAC, a JSON-lines manifest, profile.json.

Layout of a profile folder:

    profile.json         speaker, created, models built from it (rewritten atomically)
    manifest.jsonl       one line per kept take (the format `eval` reads), append-only
    takes/000001.flac    16 kHz mono FLAC, one per take

Crash safety: a take's FLAC is written to a temporary file, fsynced and renamed into
place; only then is its manifest line appended, flushed and fsynced. Killing the process at
any moment loses at most the take being written; a FLAC without a manifest line (killed
between the two) is ignored and overwritten by the next take with that number. A manifest
line cut off by a crash is ignored when reading and cut away before the next append, so
the manifest stays valid for `eval`. Re-recording appends a new take with
`"replaces": <old take id>`; readers drop replaced takes.

Held-out split: every tenth take (take ids 10, 20, ...) is `"split": "heldout"`, kept for
evaluation and never used for training.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr_app.audio import SAMPLE_RATE_HZ
from asr_app.datasets import drop_replaced, read_manifest_rows
from asr_app.errors import AsrAppError
from asr_app.outputs import atomic_write_text, write_flac_atomic

HELDOUT_EVERY = 10
MANIFEST = "manifest.jsonl"
PROFILE_JSON = "profile.json"


class ProfileError(AsrAppError):
    """A profile that cannot be found, created or read."""


def data_dir() -> Path:
    """The user's data folder: `$ASR_APP_DATA_DIR`, else platformdirs' user data dir."""
    env = os.environ.get("ASR_APP_DATA_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("asr-app", appauthor=False))


def profiles_root() -> Path:
    """Where profiles live: `data_dir()/profiles`."""
    return data_dir() / "profiles"


def profile_path(name: str | None, profile_dir: str | Path | None = None) -> Path:
    """Folder of a profile given by name (under `profiles_root()`) or by explicit folder.

    Raises:
        ProfileError: neither given, or a name that is not a plain folder name.
    """
    if profile_dir is not None:
        return Path(profile_dir).expanduser()
    if not name:
        raise ProfileError("give --profile NAME (or --profile-dir DIR)")
    if name in (".", "..") or "/" in name or "\\" in name:
        raise ProfileError(f"--profile {name!r}: use a plain name such as 'alice' (or --profile-dir for a path)")
    return profiles_root() / name


@dataclass(frozen=True)
class Take:
    """One kept recording, as a manifest line.

    Attributes:
        take_id: 1, 2, ... in recording order.
        audio: path relative to the profile folder.
        text: the exact prompt read.
        duration_s: seconds.
        split: "train" or "heldout".
        session: the session number the take was recorded in.
        prompt_id: stable id of the prompt (e.g. "builtin:42", "LJ001-0001").
        flagged: the user marked the take as doubtful; excluded from training.
        replaces: take id this one re-records, if any.
        recorded_at: Unix time, seconds.
    """

    take_id: int
    audio: str
    text: str
    duration_s: float
    split: str
    session: int
    prompt_id: str
    speaker: str = ""
    flagged: bool = False
    replaces: int | None = None
    recorded_at: float = 0.0
    source: str = "mic"

    def to_json(self) -> str:
        d = {
            "id": f"take-{self.take_id:06d}",
            "take_id": self.take_id,
            "audio": self.audio,
            "text": self.text,
            "speaker": self.speaker,
            "duration_s": self.duration_s,
            "split": self.split,
            "session": self.session,
            "prompt_id": self.prompt_id,
            "flagged": self.flagged,
            "recorded_at": self.recorded_at,
            "source": self.source,
        }
        if self.replaces is not None:
            d["replaces"] = self.replaces
        return json.dumps(d, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict) -> Take:
        return cls(
            int(d["take_id"]),
            d["audio"],
            d["text"],
            float(d["duration_s"]),
            d.get("split", "train"),
            int(d.get("session", 1)),
            str(d.get("prompt_id", "")),
            d.get("speaker", ""),
            bool(d.get("flagged", False)),
            d.get("replaces"),
            float(d.get("recorded_at", 0.0)),
            d.get("source", "mic"),
        )


class Profile:
    """An enrollment profile folder (see module docstring).

    A profile made with `create_or_open` that does not exist yet is written on its first
    write (a take, a skipped prompt, a session count), so a session that fails or records
    nothing leaves no empty profile behind.

    Args:
        path: the folder.
        new_speaker: for a profile not on disk yet, the speaker its profile.json will name.
    Raises:
        ProfileError: from `open` when the folder holds no profile.
    """

    def __init__(self, path: Path, new_speaker: str | None = None):
        self.path = Path(path)
        self._new_meta = (
            {"speaker": new_speaker, "created": time.time(), "sessions": 0, "models": []}
            if new_speaker is not None
            else None
        )

    # -- create / open ---------------------------------------------------------------------
    @classmethod
    def create_or_open(cls, path: Path, speaker: str) -> Profile:
        """Open the profile at `path`, or a new one that is written on its first write."""
        return cls(path, new_speaker=speaker)

    def exists(self) -> bool:
        """Whether the profile is on disk (has its profile.json)."""
        return (self.path / PROFILE_JSON).is_file()

    def _ensure_written(self) -> None:
        if not self.exists():
            if self._new_meta is None:
                raise ProfileError(f"no profile at {self.path}: record with `asr-app enroll --profile NAME` first")
            self.path.mkdir(parents=True, exist_ok=True)
            self._write_meta(self._new_meta)

    @classmethod
    def open(cls, path: Path) -> Profile:
        p = cls(path)
        if not (p.path / PROFILE_JSON).is_file():
            raise ProfileError(f"no profile at {p.path}: record with `asr-app enroll --profile NAME` first")
        return p

    # -- metadata --------------------------------------------------------------------------
    def meta(self) -> dict:
        """profile.json as a dict (a new profile's first contents before it is written)."""
        if self._new_meta is not None and not self.exists():
            return dict(self._new_meta)
        try:
            return json.loads((self.path / PROFILE_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ProfileError(f"{self.path / PROFILE_JSON}: unreadable ({e})") from None

    def _write_meta(self, meta: dict) -> None:
        atomic_write_text(self.path / PROFILE_JSON, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")

    def update_meta(self, **changes) -> dict:
        """Merge `changes` into profile.json (atomically) and refresh the totals."""
        self._ensure_written()
        meta = self.meta()
        meta.update(changes)
        takes = self.takes()
        meta["totals"] = {
            "takes": len(takes),
            "hours": round(sum(t.duration_s for t in takes) / 3600, 4),
            "train_takes": sum(t.split == "train" for t in takes),
            "heldout_takes": sum(t.split == "heldout" for t in takes),
        }
        self._write_meta(meta)
        return meta

    def begin_session(self) -> int:
        """Count a new recording session; returns its number (1, 2, ...)."""
        n = int(self.meta().get("sessions", 0)) + 1
        self.update_meta(sessions=n)
        return n

    # -- takes -----------------------------------------------------------------------------
    def _manifest_rows(self) -> list[dict]:
        path = self.path / MANIFEST
        return read_manifest_rows(path) if path.exists() else []

    def all_takes(self) -> list[Take]:
        """Every manifest line, replaced ones included, in order."""
        return [Take.from_dict(r) for r in self._manifest_rows() if "take_id" in r]

    def takes(self, split: str | None = None, include_flagged: bool = True) -> list[Take]:
        """Kept takes (replaced ones dropped), optionally one split only."""
        out = [Take.from_dict(r) for r in drop_replaced(self._manifest_rows()) if "take_id" in r]
        if split:
            out = [t for t in out if t.split == split]
        if not include_flagged:
            out = [t for t in out if not t.flagged]
        return out

    def next_take_id(self) -> int:
        rows = self.all_takes()
        return max((t.take_id for t in rows), default=0) + 1

    def add_take(
        self,
        audio: np.ndarray,
        text: str,
        prompt_id: str,
        session: int,
        *,
        flagged: bool = False,
        replaces: int | None = None,
        source: str = "mic",
    ) -> Take:
        """Save a take crash-safely: FLAC first (atomic), then the manifest line (fsync).

        Args:
            audio: (samples,) float32 16 kHz.
            text: the prompt read.
        Returns:
            The Take written.
        """
        self._ensure_written()
        take_id = self.next_take_id()
        rel = f"takes/{take_id:06d}.flac"
        write_flac_atomic(self.path / rel, audio)
        take = Take(
            take_id,
            rel,
            text,
            round(len(audio) / SAMPLE_RATE_HZ, 3),
            "heldout" if take_id % HELDOUT_EVERY == 0 else "train",
            session,
            prompt_id,
            speaker=self.meta().get("speaker", ""),
            flagged=flagged,
            replaces=replaces,
            recorded_at=round(time.time(), 3),
            source=source,
        )
        self._append_line(take.to_json())
        return take

    def set_flag(self, take: Take, flagged: bool = True) -> Take:
        """Flag a take by re-appending it as a replacement with the same audio."""
        new = Take(
            self.next_take_id(),
            take.audio,
            take.text,
            take.duration_s,
            take.split,
            take.session,
            take.prompt_id,
            take.speaker,
            flagged,
            take.take_id,
            round(time.time(), 3),
            take.source,
        )
        self._append_line(new.to_json())
        return new

    def _append_line(self, line: str) -> None:
        with open(self.path / MANIFEST, "a+b") as f:
            size = f.seek(0, os.SEEK_END)
            if size:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    # a crash cut the last line off mid-append: drop that torn line (its take
                    # was never kept) so it cannot end up in the middle of the manifest
                    f.seek(0)
                    f.truncate(f.read().rfind(b"\n") + 1)
            f.write(line.encode("utf-8") + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def done_prompt_ids(self) -> set[str]:
        """Prompt ids already recorded (kept or replaced), so prompts are never repeated."""
        return {t.prompt_id for t in self.all_takes()}
