"""`asr-app prompts`: maintenance of prompt sets (phoneme coverage, ordering by coverage)."""

from __future__ import annotations

import json
from pathlib import Path

from asr_app.cli.common import add_command
from asr_app.errors import AsrAppError

EXAMPLES = """examples:
  asr-app prompts coverage                            # the built-in prompts
  asr-app prompts order mine.txt ordered.txt"""


def add_parser(sub) -> None:
    """Add the `prompts` subcommand to the subparsers `sub`."""
    p = add_command(sub, "prompts", "prompt-set coverage (needs the [prompts] extra)", EXAMPLES)
    p.add_argument(
        "action",
        choices=("coverage", "order"),
        help="coverage: phoneme and phoneme-pair coverage of a prompt set; order: write the "
        "sentences of SRC... to OUT in the order that covers the most phonemes soonest",
    )
    p.add_argument("files", nargs="*", help="coverage: files to measure (default: built-in); order: SRC... OUT")
    p.set_defaults(func=run)


def run(args) -> int:
    """Maintenance of prompt sets: measure coverage, or order sentences by coverage."""
    from asr_app.enroll.prompts import Coverage, builtin_prompts, read_prompt_lines

    cov = Coverage()
    if args.action == "order":
        if len(args.files) < 2:
            raise AsrAppError("usage: asr-app prompts order SRC... OUT")
        ordered = cov.order(read_prompt_lines(args.files[:-1]))
        Path(args.files[-1]).write_text("".join(p.text + "\n" for p in ordered), encoding="utf-8")
        print(f"wrote {len(ordered)} prompts to {args.files[-1]}")
        return 0
    prompts = read_prompt_lines(args.files) if args.files else builtin_prompts()
    for hours in (0.5, 1.0, None):
        print(json.dumps({"first_hours": hours, **cov.report(prompts, hours)}))
    return 0
