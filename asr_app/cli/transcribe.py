"""`asr-app transcribe`: audio files and folders in batch (resumable), or the microphone `--live`."""

from __future__ import annotations

import sys
from pathlib import Path

from asr_app.cli.common import (
    EXIT_FAILURES,
    FirstUseProgress,
    add_command,
    add_decoding_args,
    add_model_args,
    audio_source,
    load_bundle,
    open_profile,
    transcribe_options,
)
from asr_app.errors import AsrAppError

EXAMPLES = """examples:
  asr-app transcribe recordings/                      # every audio file in the folder, recursively
  asr-app transcribe talk.m4a --format srt txt --output-dir subs
  asr-app transcribe interview.flac --model base --language de
  asr-app transcribe --live                           # the microphone, in a terminal screen
  asr-app transcribe --live --input talk.flac --speed 0 --no-tui"""


def add_parser(sub) -> None:
    """Add the `transcribe` subcommand to the subparsers `sub`."""
    p = add_command(sub, "transcribe", "transcribe audio files and folders, or the microphone live", EXAMPLES)
    p.add_argument("paths", nargs="*", help="audio files and folders (searched recursively)")
    add_model_args(p)
    add_decoding_args(p)
    p.add_argument(
        "--format",
        nargs="+",
        default=["all"],
        choices=("txt", "srt", "vtt", "json", "tsv", "all"),
        help="output formats (default: all)",
    )
    p.add_argument("--output-dir", default="transcripts", help="where outputs go (default: ./transcripts)")
    p.add_argument("--overwrite", action="store_true", help="redo files whose outputs already exist")
    p.add_argument("--no-vad", action="store_true", help="decode silence too (no voice activity detection)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no transcript on stdout")
    p.add_argument("--live", action="store_true", help="transcribe the microphone live in a terminal UI")
    p.add_argument("--input", default=None, help="with --live: replay this file instead of the microphone")
    p.add_argument("--speed", type=float, default=1.0, help="with --input: 1 = real time, 0 = as fast as possible")
    p.add_argument("--reference", default=None, help="with --live: text you will read, for live WER")
    p.add_argument("--read-along", action="store_true", help="with --live: show sentences to read, track WER")
    p.add_argument("--no-tui", action="store_true", help="with --live: print committed lines to stdout")
    p.add_argument(
        "--save-dir",
        default=None,
        help="with --live: save the session here (default: the --profile's sessions/, "
        "which `asr-app adapt --live-sessions` learns from, else the data dir)",
    )
    p.set_defaults(func=run)


class _TqdmProgress:
    """Progress bar over audio seconds: files done, audio hours done, ETA, running RTF.

    The bar counts exact seconds from the file headers and never passes its total (a
    decoded file can be a little longer than its header says); the figures are written
    by us into the description, so tqdm's blanking of a passed total cannot break the
    format.
    """

    def __init__(self, enabled: bool, file=None):
        self.enabled = enabled
        self.file = file or sys.stderr
        self.bar = None
        self.files_done = 0
        self.total_files = 0
        self.total_audio_s = 0.0
        self.counted_s = 0.0  # header seconds of the files done
        self.audio_done_s = 0.0  # decoded seconds of the files transcribed
        self.decode_s = 0.0

    def start(self, total_files: int, total_audio_s: float) -> None:
        from tqdm import tqdm

        self.total_files = total_files
        self.total_audio_s = total_audio_s
        self.bar = tqdm(
            total=max(total_audio_s, 1e-6),
            disable=not self.enabled or total_files == 0,
            file=self.file,
            bar_format="{percentage:3.0f}%|{bar}| {desc} [{elapsed}<{remaining}]",
        )
        self._postfix()

    def _postfix(self):
        rtf = self.decode_s / self.audio_done_s if self.audio_done_s else 0.0
        digits = 1 if self.total_audio_s < 100 else 0
        self.bar.set_description_str(
            f"{self.counted_s:.{digits}f}/{self.total_audio_s:.{digits}f} s audio, files "
            f"{self.files_done}/{self.total_files}, {self.audio_done_s / 3600:.3f} h done, "
            f"RTF {rtf:.3f}",
            refresh=True,
        )

    def file_done(self, job, transcript, audio_s: float, error: str | None) -> None:
        self.files_done += 1
        if transcript is not None:
            self.audio_done_s += transcript.duration_s
            self.decode_s += transcript.decode_time_s
        if error:
            self.bar.write(f"error: {error}", file=self.file)
        self.counted_s = min(self.total_audio_s, self.counted_s + audio_s)
        self.bar.n = self.counted_s
        self._postfix()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args) -> int:
    """`asr-app transcribe`: files and folders in batch (resumable), or `--live`; returns the exit code."""
    from asr_app.batch import plan_jobs, run_batch
    from asr_app.outputs import FORMATS
    from asr_app.transcribe import Transcriber

    if args.live:
        return run_live(args)
    if not args.paths:
        raise AsrAppError("give at least one audio file or folder to transcribe")
    formats = FORMATS if "all" in args.format else tuple(dict.fromkeys(args.format))
    jobs = plan_jobs(args.paths, Path(args.output_dir))
    transcriber = Transcriber(
        transcribe_options(args, vad=not args.no_vad), on_progress=FirstUseProgress(args.model, enabled=not args.quiet)
    )

    def show(job, transcript):
        progress.bar.write(f"{job.audio}", file=sys.stdout)
        for s in transcript.segments:
            progress.bar.write(f"  [{s.start_s:8.2f} --> {s.end_s:8.2f}] {s.text.strip()}", file=sys.stdout)
        if not transcript.segments:
            progress.bar.write("  (no speech)", file=sys.stdout)

    progress = _TqdmProgress(enabled=not args.quiet)
    result = run_batch(
        jobs,
        transcriber,
        formats,
        overwrite=args.overwrite,
        progress=progress,
        on_transcript=None if args.quiet else show,
    )
    if result.skipped:
        print(
            f"skipped {len(result.skipped)} file(s) already transcribed in {args.output_dir} (--overwrite to redo)",
            file=sys.stderr,
        )
    print(f"transcribed {len(result.done)} file(s) into {args.output_dir}", file=sys.stderr)
    if result.failed:
        print(f"{len(result.failed)} file(s) failed:", file=sys.stderr)
        for reason in result.failed.values():
            print(f"  {reason}", file=sys.stderr)
        return EXIT_FAILURES
    return 0


def live_options(args):
    """The live path's `StreamingOptions`: its defaults, with `--encoder-padding`."""
    import dataclasses

    from asr_app.streaming import StreamingOptions

    default = StreamingOptions()
    padding = getattr(args, "encoder_padding", None)
    return dataclasses.replace(default, decoding=dataclasses.replace(default.decoding, encoder_padding_s=padding))


def run_live(args) -> int:
    """`transcribe --live`: microphone (or --input FILE) through the streaming transcriber."""
    from asr_app.live import LiveSession
    from asr_app.live import run_live as run_live_session

    if args.paths:
        raise AsrAppError("--live takes no PATH; use --input FILE to replay a file")
    reference = None
    if args.reference:
        try:
            reference = Path(args.reference).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise AsrAppError(f"--reference {args.reference}: cannot read it as UTF-8 text ({e})") from None
    prompts = None
    if args.read_along:
        from asr_app.enroll.prompts import builtin_prompts

        prompts = [p.text for p in builtin_prompts()]
    source = audio_source(args)
    sessions_dir = None
    if args.profile or args.profile_dir:  # the profile keeps its sessions: `adapt --live-sessions`
        from asr_app.adapt.unlabeled import LIVE_SESSIONS

        sessions_dir = open_profile(args).path / LIVE_SESSIONS
    session = LiveSession(
        load_bundle(args),
        reference=reference,
        prompts=prompts,
        sessions_dir=sessions_dir,
        input_path=args.input,
        options=live_options(args),
    )
    save_dir = Path(args.save_dir) if args.save_dir else None
    if args.no_tui:
        if prompts:
            print(f"read: {session.current_prompt}", file=sys.stderr)

        def on_event(kind, payload):
            if kind == "update" and payload.committed:
                print(payload.committed, flush=True)

        print(
            f"{'replaying ' + args.input if args.input else 'listening'} (Ctrl-C ends the session)",
            file=sys.stderr,
            flush=True,
        )
        try:
            why = run_live_session(session, source, on_event)
        finally:
            folder = session.save(save_dir)
        if why == "interrupted":
            print("stopped (Ctrl-C); everything heard was committed", file=sys.stderr)
        if session.tracks_wer:
            errors = session.wer.errors()
            counts = errors.counts
            print(
                f"WER {100 * counts.wer:.2f}% over {counts.reference_words} words read (S {counts.substitutions}, "
                f"D {counts.deletions}, I {counts.insertions})",
                file=sys.stderr,
            )
            if errors.missed:
                print("missed: " + " ".join(session.wer.reference_words[i] for i in errors.missed), file=sys.stderr)
        print(f"session saved to {folder}", file=sys.stderr)
        return 0
    from asr_app.tui.live_app import LiveApp

    app = LiveApp(session, source, save_dir)
    app.run()
    if app.saved_to:
        print(f"session saved to {app.saved_to}")
    return 0
