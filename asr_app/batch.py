"""Batch transcription of files and folders: resume, per-file failures, progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from asr_app.audio import AUDIO_EXTENSIONS, audio_duration_s
from asr_app.errors import AsrAppError, AudioError
from asr_app.outputs import output_paths, write_transcript
from asr_app.transcribe import Transcriber, Transcript


@dataclass(frozen=True)
class BatchJob:
    """One input file and where its outputs go (`stem` + `.txt`, `.srt`, ...)."""

    audio: Path
    stem: Path


@dataclass
class BatchResult:
    """What a batch did. failed maps each file to the one-line reason."""

    done: list[Transcript] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)


def plan_jobs(paths: list[str | Path], output_dir: Path) -> list[BatchJob]:
    """Expand files and folders (recursively) into jobs.

    A file found in folder `D` at `D/a/b.flac` writes `output_dir/a/b.<fmt>`; a file named
    directly writes `output_dir/<name>.<fmt>`. Files named directly are kept whatever their
    extension (a bad one is then reported); in folders only audio extensions are taken.

    Raises:
        AudioError: a path that does not exist, or folders holding no audio file at all.
    """
    jobs: dict[Path, BatchJob] = {}
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS:
                    jobs.setdefault(f, BatchJob(f, output_dir / f.relative_to(p).with_suffix("")))
        elif p.exists():
            jobs.setdefault(p, BatchJob(p, output_dir / p.stem))
        else:
            raise AudioError(f"{p}: no such file or folder")
    if not jobs:
        folders = ", ".join(str(p) for p in paths)
        raise AudioError(
            f"no audio files found in {folders} (searched recursively for {' '.join(sorted(AUDIO_EXTENSIONS))})"
        )
    return list(jobs.values())


class Progress:
    """Receives batch events; the CLI's implementation draws a progress bar."""

    def start(self, total_files: int, total_audio_s: float) -> None: ...
    def file_done(self, job: BatchJob, transcript: Transcript | None, audio_s: float, error: str | None) -> None: ...
    def close(self) -> None: ...


def run_batch(
    jobs: list[BatchJob],
    transcriber: Transcriber,
    formats: tuple[str, ...],
    overwrite: bool = False,
    progress: Progress | None = None,
    on_transcript: Callable[[BatchJob, Transcript], None] | None = None,
) -> BatchResult:
    """Transcribe every job, writing outputs atomically; never stops on a bad file.

    A job whose every output file exists is skipped unless `overwrite`, so an interrupted
    batch resumes where it stopped.

    Returns:
        BatchResult with transcripts, skipped inputs and failures (file -> reason).
    """
    progress = progress or Progress()
    result = BatchResult()
    todo = []
    for job in jobs:
        if not overwrite and all(p.exists() for p in output_paths(job.stem, formats)):
            result.skipped.append(job.audio)
        else:
            todo.append(job)
    durations = {job.audio: audio_duration_s(job.audio) for job in todo}
    progress.start(len(todo), sum(durations.values()))
    try:
        for job in todo:
            try:
                transcript = transcriber.transcribe_file(job.audio)
                write_transcript(transcript, job.stem, formats)
            except AsrAppError as e:
                result.failed[job.audio] = str(e)
                progress.file_done(job, None, durations[job.audio], str(e))
                continue
            except OSError as e:  # e.g. output folder not writable
                reason = f"{job.audio}: cannot write output: {e}"
                result.failed[job.audio] = reason
                progress.file_done(job, None, durations[job.audio], reason)
                continue
            result.done.append(transcript)
            if on_transcript:
                on_transcript(job, transcript)
            progress.file_done(job, transcript, durations[job.audio], None)
    finally:
        progress.close()
    return result
