"""`asr-app eval`: corpus-level word error rate of a model on a labelled set."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from asr_app.cli.common import (
    EXIT_FAILURES,
    FirstUseProgress,
    add_command,
    add_decoding_args,
    add_model_args,
    open_profile,
    transcribe_options,
)
from asr_app.errors import AsrAppError

EXAMPLES = """examples:
  asr-app eval ../shared/data/librispeech/train-clean-5
  asr-app eval ../shared/data/ljspeech --filter 'LJ002-*' --report lj002.json
  asr-app eval --profile alice                        # the profile's held-out takes"""


def add_parser(sub) -> None:
    """Add the `eval` subcommand to the subparsers `sub`."""
    p = add_command(sub, "eval", "word error rate on a labelled set", EXAMPLES)
    p.add_argument(
        "dataset",
        nargs="?",
        help="LibriSpeech folder, LJSpeech folder, or manifest .jsonl "
        "(default with --profile: the profile's held-out takes)",
    )
    p.add_argument("--split", default=None, choices=("train", "heldout"), help="manifest split to evaluate")
    add_model_args(p, "use this profile's adapted model and, without DATASET, its held-out takes")
    add_decoding_args(p)
    p.add_argument("--filter", default=None, help="keep utterance ids matching this glob, e.g. 'LJ002-*'")
    p.add_argument("--limit", type=int, default=None, help="first N utterances only")
    p.add_argument("--vad", action="store_true", help="apply VAD before decoding (off for eval by default)")
    p.add_argument("--report", default=None, help="write a JSON report with every utterance here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    """`asr-app eval`: corpus-level WER of a model on a dataset; returns the exit code."""
    from tqdm import tqdm

    from asr_app.datasets import load_dataset
    from asr_app.evaluate import evaluate
    from asr_app.outputs import atomic_write_text
    from asr_app.transcribe import Transcriber

    split = args.split
    if (args.profile or args.profile_dir) and not args.dataset:
        args.dataset = str(open_profile(args).path / "manifest.jsonl")
        split = split or "heldout"
    if not args.dataset:
        raise AsrAppError("give a DATASET (folder or manifest) or --profile NAME")
    utts = load_dataset(args.dataset, args.filter, args.limit, split=split)
    transcriber = Transcriber(
        transcribe_options(args, vad=args.vad), on_progress=FirstUseProgress(args.model, enabled=not args.quiet)
    )
    name = args.dataset + (f" [{args.filter}]" if args.filter else "") + (f" split={split}" if split else "")
    with tqdm(total=len(utts), unit="utt", file=sys.stderr, disable=args.quiet) as bar:
        report = evaluate(utts, transcriber, name, on_utterance=lambda row: bar.update(1))
    t = report.total
    backend = transcriber.bundle.backend
    quant = f" {transcriber.bundle.config['quantize']}" if backend == "onnx" else ""
    print(
        f"model {report.model} ({backend}{quant})  dataset {name}  utterances {len(report.utterances)}  "
        f"audio {report.audio_s / 60:.2f} min"
    )
    print(
        f"WER {100 * t.wer:.2f}%  (S {t.substitutions}, D {t.deletions}, I {t.insertions}, "
        f"N {t.reference_words})  RTF {report.rtf:.3f}"
    )
    if len(report.per_speaker) > 1:
        print(f"{'speaker':>12} {'words':>7} {'WER %':>7}")
        for spk, c in sorted(report.per_speaker.items()):
            print(f"{spk:>12} {c.reference_words:>7} {100 * c.wer:>7.2f}")
    for reason in report.failed.values():
        print(f"error: {reason}", file=sys.stderr)
    if args.report:
        atomic_write_text(Path(args.report), json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        print(f"report written to {args.report}")
    return EXIT_FAILURES if report.failed else 0
