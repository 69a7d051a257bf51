"""`asr-app adapt --refresh`: re-adapt a profile's model with what was added since it was
made (new enrollment takes, new live sessions), starting from the saved model.

What is new is what the model did not train on: the takes and live sessions missing from
the lists it saved (a model saved before those lists: what was recorded after it was
made). The refresh run skips calibration and
the methods' compression stages (the saved model already has its structure), and runs the
recovery stages from the saved weights on every training window, old and new, for
`REHEARSAL` times the new audio's share of the steps a full run takes (at most a full run):
the new audio weighs in and the old is rehearsed, so what the model learned is kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from asr_app.adapt.options import AdaptError, AdaptOptions

REHEARSAL = 2.0  # a refresh trains on (new audio x this) worth of windows, drawn from all of them
RUN_OPTIONS = ("threads", "device", "time_budget_min", "general_set", "general_limit", "speaker_set", "speaker_filter")


def source_model(profile, name: str | None = None) -> dict:
    """The profile's model to refresh: `name`, or the latest (the one `--profile` uses).

    Returns:
        Its entry of profile.json's "models" ({"name", "path", ...}).
    Raises:
        AdaptError: no adapted model, or no model of that name (lists the names).
    """
    models = profile.meta().get("models", [])
    if not models:
        raise AdaptError(
            f"profile {profile.path.name} has no adapted model to refresh: run `asr-app adapt --profile "
            f"{profile.path.name}` first"
        )
    if name is None:
        return models[-1]
    for m in models:
        if m.get("name") == name:
            return m
    raise AdaptError(
        f"profile {profile.path.name} has no model {name!r}; it has {', '.join(m['name'] for m in models)}"
    )


def what_is_new(profile, block: dict) -> dict:
    """The training takes and live sessions of `profile` that the model whose compression
    block is `block` (its config.json's) did not train on: by the lists it saved
    ("trained_on"), or for a model saved before those lists, by time (recorded or written
    after its "created").

    Returns:
        {"takes": [take audio paths, relative to the profile], "takes_s": seconds,
        "live_sessions": [session audio paths], "live_s": seconds, "old_s": seconds of the
        training takes and live sessions it trained on, "every_session": [every live
        session's audio path, new or not]}.
    """
    from asr_app.adapt.unlabeled import live_sessions

    takes = profile.takes("train", include_flagged=False)
    sessions = live_sessions(profile.path)
    every_session = [str(f) for f, _ in sessions]
    trained = block.get("trained_on")
    if trained is not None:
        known_takes = set(trained.get("takes", ()))
        known_audio = {str(Path(p).resolve()) for p in trained.get("unlabeled", ())}
        is_new_take = lambda t: t.audio not in known_takes  # noqa: E731
        is_new_session = lambda f: str(f.resolve()) not in known_audio  # noqa: E731
    else:
        created = float(block.get("created") or 0.0)
        is_new_take = lambda t: t.recorded_at > created  # noqa: E731
        is_new_session = lambda f: f.stat().st_mtime > created  # noqa: E731
    new_takes = [t for t in takes if is_new_take(t)]
    new_sessions = [(f, s) for f, s in sessions if is_new_session(f)]
    old_s = sum(t.duration_s for t in takes if not is_new_take(t)) + sum(
        s for f, s in sessions if not is_new_session(f)
    )
    return {
        "takes": [t.audio for t in new_takes],
        "takes_s": round(sum(t.duration_s for t in new_takes), 2),
        "live_sessions": [str(f) for f, _ in new_sessions],
        "live_s": round(sum(s for _, s in new_sessions), 2),
        "old_s": round(old_s, 2),
        "every_session": every_session,
    }


def refresh_options(profile, model: dict, overrides: dict) -> tuple[AdaptOptions, dict]:
    """The options of a refresh of `model` (a profile.json entry): the saved model's own
    options, every live session of the profile added to its unlabeled audio, no control
    run, `overrides` (threads, device, evaluation sets: `RUN_OPTIONS`) applied.

    Returns:
        (options, what_is_new's dict).
    Raises:
        AdaptError: the model folder or its options are missing, the model changed the
            vocabulary (FVT: adapt again instead), or nothing was added since it was made.
    """
    from asr_app.compression.checkpoint import compression_block

    folder = profile.path / model["path"]
    block = compression_block(folder)
    if block is None or not isinstance(block.get("options"), dict):
        raise AdaptError(f"{folder}: cannot read the saved model's options; adapt again instead")
    saved = dict(block["options"])
    new = what_is_new(profile, {"created": model.get("created"), **block})
    if not new["takes"] and not new["live_sessions"]:
        raise AdaptError(
            f"nothing was added to profile {profile.path.name} since {model['name']} was made: record takes "
            f"(`asr-app enroll --profile {profile.path.name}`) or live sessions (`asr-app transcribe --live "
            f"--profile {profile.path.name}`) first (to finish an interrupted refresh, name the model it "
            "refreshes: --refresh MODEL)"
        )
    methods = tuple(saved.pop("methods", ("adaptwin",)))
    flat = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    flat["unlabeled"] = tuple(dict.fromkeys([*flat.get("unlabeled", ()), *new["every_session"]]))
    flat.update(control=False, refresh_from=model["name"], **{k: v for k, v in overrides.items() if k in RUN_OPTIONS})
    digest = hashlib.sha1(json.dumps([new["takes"], new["live_sessions"]]).encode()).hexdigest()[:6]
    flat["refresh_key"] = digest
    total = new["takes_s"] + new["live_s"] + new["old_s"]
    flat["refresh_share"] = round(min(1.0, REHEARSAL * (new["takes_s"] + new["live_s"]) / max(total, 1e-9)), 4)
    try:
        opts = AdaptOptions.from_flat(methods, **_known(flat, methods))
    except ValueError as e:
        raise AdaptError(f"{model['name']}: its saved options do not load ({e}); adapt again instead") from None
    if opts.changes_vocabulary:
        raise AdaptError(f"{model['name']} has its own vocabulary (FVT): --refresh keeps the structure; adapt again")
    return opts, new


def _known(flat: dict, methods: tuple) -> dict:
    """The entries of a saved flat options dict that today's options take (a model saved by
    an older version may carry fields since removed)."""
    from asr_app.compression.methods import get_method

    names = {f.name for f in dataclasses.fields(AdaptOptions)} - {"methods"}
    for m in methods:
        names |= {f.name for f in dataclasses.fields(get_method(m).options_class)} - {"method"}
    return {k: v for k, v in flat.items() if k in names}


def load_source(profile, opts: AdaptOptions, device: str):
    """The saved model a refresh starts from: (model in train-ready float32 on `device`,
    its method blocks). Raises AdaptError when it no longer loads."""
    from asr_app.compression.checkpoint import load_compressed, method_blocks

    entry = source_model(profile, opts.refresh_from)
    try:
        model, block = load_compressed(Path(profile.path / entry["path"]))
    except (OSError, ValueError) as e:
        raise AdaptError(f"cannot load {entry['name']} to refresh it: {e}") from None
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device), list(method_blocks(block))
