"""`asr-app` command line: parses, builds option dataclasses, calls the library, formats.

Every user-facing failure is one line on stderr and a non-zero exit, never a traceback.
One module per command (`add_parser(sub)`, `run(args) -> int`); what they share is in
`asr_app.cli.common`.
"""

from __future__ import annotations

import argparse
import os
import sys

from asr_app.cli import adapt, bench, enroll, export, profiles, prompts, transcribe
from asr_app.cli import eval as evaluate  # `eval` would shadow the builtin here
from asr_app.cli.adapt import resolve_train_device
from asr_app.cli.common import EXIT_FAILURES, EXIT_USAGE, resolve_model
from asr_app.errors import AsrAppError

__all__ = ["EXIT_FAILURES", "EXIT_USAGE", "build_parser", "main", "resolve_train_device"]

COMMANDS = (transcribe, evaluate, bench, export, enroll, prompts, adapt, profiles)  # in `--help` order


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: the problem, then where the usage is."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The `asr-app` argument parser with one subcommand per command."""
    from asr_app import __version__

    parser = _Parser(prog="asr-app", description="On-device Whisper speech recognition.")
    parser.add_argument("--version", action="version", version=f"asr-app {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point. Returns the exit code."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        from asr_app.models import quiet_transformers_logging

        quiet_transformers_logging()
        if hasattr(args, "model"):
            resolve_model(args)
        return args.func(args)
    except AsrAppError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILURES if not isinstance(e, ValueError) else EXIT_USAGE
    except ValueError as e:  # option dataclasses reject bad values with ValueError
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; finished files are kept, run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
