"""`asr-app profiles`: list enrollment profiles and their adapted models."""

from __future__ import annotations

from asr_app.cli.common import add_command

EXAMPLES = """examples:
  asr-app profiles"""


def add_parser(sub) -> None:
    """Add the `profiles` subcommand to the subparsers `sub`."""
    p = add_command(sub, "profiles", "list enrollment profiles", EXAMPLES)
    p.set_defaults(func=run)


def run(args) -> int:
    """`asr-app profiles`: list enrollment profiles and their adapted models; returns the exit code."""
    from asr_app.adapt.unlabeled import live_sessions
    from asr_app.enroll.profile import Profile, profiles_root

    root = profiles_root()
    found = sorted(p for p in root.iterdir() if (p / "profile.json").is_file()) if root.is_dir() else []
    if not found:
        print(f"no profiles yet in {root}: create one with `asr-app enroll --profile NAME`")
        return 0
    # takes: enrolled (transcribed) audio; live: sessions saved by `transcribe --live --profile`,
    # audio without transcripts that `adapt --live-sessions` trains on
    print(
        f"{'profile':<16} {'hours':>7} {'takes':>6} {'held out':>8} {'enroll sessions':>15} {'live sessions':>13} {'live min':>8}  models"
    )
    for path in found:
        prof = Profile(path)
        meta = prof.meta()
        takes = prof.takes()
        hours = sum(t.duration_s for t in takes) / 3600
        models = ", ".join(m.get("name", "?") for m in meta.get("models", [])) or "-"
        live = live_sessions(path)
        live_min = sum(seconds for _, seconds in live) / 60
        print(
            f"{path.name:<16} {hours:>7.2f} {len(takes):>6} {sum(t.split == 'heldout' for t in takes):>8} "
            f"{meta.get('sessions', 0):>15} {len(live):>13} {live_min:>8.1f}  {models}"
        )
    return 0
