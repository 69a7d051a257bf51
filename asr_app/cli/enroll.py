"""`asr-app enroll`: record (or import) your voice into a profile, resuming where it stopped."""

from __future__ import annotations

import sys

from asr_app.cli.common import FirstUseProgress, add_command, add_model_args, audio_source, field_default, open_profile

EXAMPLES = """examples:
  asr-app enroll --profile alice                      # record with the microphone
  asr-app enroll --profile alice --status
  asr-app enroll --profile lj --import ../shared/data/ljspeech --filter 'LJ001-*'"""


def add_parser(sub) -> None:
    """Add the `enroll` subcommand to the subparsers `sub`."""
    from asr_app.enroll.quality import QualityOptions

    p = add_command(sub, "enroll", "record (or import) your voice into a profile", EXAMPLES)
    p.add_argument("--profile", default=None, help="profile name (kept in the user data folder)")
    p.add_argument("--profile-dir", default=None, help="keep the profile in this folder instead")
    p.add_argument("--speaker", default=None, help="speaker name stored in the profile (default: profile name)")
    p.add_argument(
        "--prompts", default=None, help="text file to read from (split into sentences) instead of the built-in prompts"
    )
    p.add_argument("--target-hours", type=float, default=8.0, help="enrollment target (default 8)")
    p.add_argument(
        "--input",
        default=None,
        help="read this audio file instead of the microphone: a recording of you reading the "
        "prompts shown, in order, with a pause after each (to import recordings of other "
        "texts, use --import)",
    )
    p.add_argument("--speed", type=float, default=1.0, help="with --input: 1 = real time, 0 = as fast as possible")
    p.add_argument(
        "--import",
        dest="import_dir",
        default=None,
        help="import recordings with transcripts (LibriSpeech, LJSpeech or manifest)",
    )
    p.add_argument("--filter", default=None, help="with --import: utterance ids matching this glob")
    p.add_argument("--limit", type=int, default=None, help="with --import: first N utterances")
    p.add_argument("--status", action="store_true", help="show progress toward the target and exit")
    p.add_argument("--no-tui", action="store_true", help="plain text instead of the terminal UI")
    p.add_argument("--no-asr-check", action="store_true", help="skip the misreading check (no model needed)")
    p.add_argument(
        "--max-wer",
        type=float,
        default=field_default(QualityOptions, "max_wer"),
        help="misreading check: reject takes above this WER",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(p, profile_help=None)
    p.set_defaults(func=run)


def _asr_check(args):
    """audio -> text with the chosen model, for the misreading check; None when disabled."""
    if args.no_asr_check:
        return None
    from asr_app.transcribe import TranscribeOptions, Transcriber

    transcriber = Transcriber(
        TranscribeOptions(
            model=args.model,
            device=args.device,
            threads=args.threads,
            vad=False,
            backend=args.backend,
            quantize=args.quantize,
        ),
        on_progress=FirstUseProgress(args.model),
    )
    return lambda audio: transcriber.transcribe_audio(audio).text


def run(args) -> int:
    """`asr-app enroll`: record prompted takes into a profile, resuming a session; returns the exit code."""
    from asr_app.enroll.profile import Profile, profile_path
    from asr_app.enroll.quality import QualityOptions
    from asr_app.enroll.session import profile_progress

    if args.status:
        profile = open_profile(args)
        print(f"profile {profile.path}")
        print(profile_progress(profile, args.target_hours).summary())
        return 0
    path = profile_path(args.profile, args.profile_dir)
    profile = Profile.create_or_open(path, speaker=args.speaker or args.profile or path.name)
    quality = QualityOptions(max_wer=args.max_wer)
    if args.import_dir:
        return _enroll_import(args, profile, quality)
    return _enroll_record(args, profile, quality)


def _enroll_import(args, profile, quality) -> int:
    """`enroll --import`: labelled recordings into the profile, each checked like a recorded take."""
    from tqdm import tqdm

    from asr_app.datasets import load_dataset
    from asr_app.enroll.importer import import_utterances
    from asr_app.enroll.session import profile_progress

    utts = load_dataset(args.import_dir, args.filter, args.limit)
    check = _asr_check(args)
    with tqdm(total=len(utts), unit="utt", file=sys.stderr, disable=args.quiet) as bar:

        def progress(utt, rejected):
            if rejected:
                bar.write(f"rejected {utt.id}: {rejected}", file=sys.stderr)
            bar.update(1)

        result = import_utterances(profile, utts, check, quality, on_progress=progress)
    print(
        f"imported {result.kept} take(s), {result.kept_s / 60:.2f} min, into {profile.path}"
        + (f"; {result.already} already there" if result.already else "")
        + (f"; {len(result.rejected)} rejected" if result.rejected else "")
    )
    print(profile_progress(profile, args.target_hours).summary())
    return 0


def _enroll_record(args, profile, quality) -> int:
    """Prompted takes from the microphone (or --input), in the terminal UI or as plain text."""
    from asr_app.enroll.prompts import builtin_prompts, prompts_from_file
    from asr_app.enroll.session import EnrollSession, run_session

    prompts = prompts_from_file(args.prompts) if args.prompts else builtin_prompts()
    source = audio_source(args)
    session = EnrollSession(
        profile, prompts, _asr_check(args), quality, target_hours=args.target_hours, source=source.name
    )
    if session.current is None:
        print("every prompt has been recorded or skipped: give more text with --prompts FILE")
        return 0
    if args.no_tui:

        def on_event(kind, payload):
            if kind == "prompt" and payload is not None:
                print(f"read: {payload.text}", flush=True)
            elif kind == "take":
                take = f" as take {payload.take.take_id}" if payload.take else ""
                print(f"  {payload.report.summary()}{take}", flush=True)
            elif kind == "info":
                print(f"  {payload}", flush=True)

        why = run_session(session, source, on_event)
        print(f"session ended ({why}). {session.progress().summary()}")
        return 0
    from asr_app.tui.enroll_app import EnrollApp

    EnrollApp(session, source).run()
    print(session.progress().summary())
    return 0
