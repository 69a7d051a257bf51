"""`asr-app adapt`: compress Whisper and adapt it to a profile's voice (AdaPTwin, FVT, CALD; see
asr_app.adapt). Its arguments: asr_app.cli.adapt_args."""

from __future__ import annotations

import sys
from pathlib import Path

from asr_app.cli.adapt_args import CALD_OPTIONS, FVT_OPTIONS, METHOD_OPTIONS, add_arguments
from asr_app.cli.common import open_profile

__all__ = ["add_parser", "resolve_train_device", "run"]


def add_parser(sub) -> None:
    """Add the `adapt` subcommand to the subparsers `sub`."""
    add_arguments(sub).set_defaults(func=run)


def resolve_train_device(device: str) -> str:
    """ "auto" -> "cuda" when torch sees a CUDA GPU, else "cpu"; "cpu" and "cuda" unchanged
    (a missing GPU for "cuda" is reported when the model loads)."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _adapt_options(args, profile=None):
    """The `AdaptOptions` of the parsed arguments (AdaPTwin options left out take the method's defaults)."""
    from asr_app.adapt import AdaptOptions

    method = {field: getattr(args, dest) for dest, field in METHOD_OPTIONS.items() if getattr(args, dest) is not None}
    for path in args.domain_text or ():
        if not Path(path).is_file():
            raise ValueError(f"--domain-text {path}: no such file")
    for dest, field in FVT_OPTIONS.items():
        if getattr(args, dest) is not None:
            method[field] = tuple(getattr(args, dest)) if dest == "domain_text" else getattr(args, dest)
    for dest, field in CALD_OPTIONS.items():
        if getattr(args, dest) is not None:
            method[field] = tuple(getattr(args, dest)) if dest == "train_chunks" else getattr(args, dest)
    if args.plain:  # plain SVD: none of the statistics-weighted refinements either
        method["data_aware"] = False
        for field, plain in (("twin_stats", "input"), ("centre", False), ("query_bias_fit", "plain")):
            method.setdefault(field, plain)
    if args.attention_only:
        method["ffn"] = False
    stages = tuple(s for s in ("layerwise", "finetune") if s not in (args.skip or []))
    return AdaptOptions.from_flat(
        tuple(args.methods),
        **method,
        base=args.base,
        lora_rank=args.lora_rank,
        finetune_lora=args.finetune_lora,
        layerwise_epochs=args.layerwise_epochs,
        finetune_epochs=args.finetune_epochs,
        batch_size=args.batch_size,
        kd_weight=args.kd_weight,
        layerwise_teacher_input=args.layerwise_teacher_input,
        layerwise_vtlp=args.layerwise_vtlp,
        layerwise_loss=args.layerwise_loss,
        layerwise_padding_weight=args.layerwise_padding_weight,
        layerwise_attention_kl=args.layerwise_attention_kl,
        sensitivity=args.sensitivity,
        replay=tuple(args.replay or ()),
        replay_ratio=args.replay_ratio,
        unlabeled=_unlabeled_files(args, profile),
        stages=stages,
        control=not args.no_control,
        general_set=args.general_set,
        general_limit=args.general_limit,
        speaker_set=args.speaker_set,
        speaker_filter=args.speaker_filter,
        time_budget_min=args.time_budget_min,
        device=resolve_train_device(args.device),
        threads=args.threads,
        seed=args.seed,
        varied_windows=not args.full_windows,
        calibration_replay_share=args.calibration_replay_share,
        speed_perturb=tuple(args.speed_perturb),
    )


class _StageBars:
    """`run_adapt`'s events on stderr: a heading per stage, a bar per progress stream, info lines."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bars: dict = {}

    def __call__(self, kind: str, payload) -> None:
        if kind == "stage":
            self.close()
            print(f"== {payload}", file=sys.stderr)
        elif kind == "progress" and not self.quiet:
            from tqdm import tqdm

            stage, done, total = payload[:3]
            if stage not in self.bars:
                self.bars[stage] = tqdm(
                    total=total, desc=stage, unit="step" if len(payload) > 3 else "item", file=sys.stderr
                )
            bar = self.bars[stage]
            bar.n = done
            if len(payload) > 3:
                bar.set_postfix(loss=f"{payload[3]:.4f}", refresh=False)
            bar.refresh()
        elif kind == "info":
            print(payload, file=sys.stderr)

    def close(self) -> None:
        """Close the open bars."""
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def _unlabeled_files(args, profile) -> tuple[str, ...]:
    """The audio files of --unlabeled (folders searched) and, with --live-sessions, of the
    profile's live sessions, each once: the run's name hashes them, so files added to a
    folder make another run. ValueError for a missing path, a folder without audio, or
    --live-sessions on a profile without any."""
    from asr_app.adapt.unlabeled import find_audio, live_sessions

    paths = list(args.unlabeled or ())
    if getattr(args, "live_sessions", False) and profile is not None:
        sessions = [audio for audio, _ in live_sessions(profile.path)]
        if not sessions:
            raise ValueError(
                f"--live-sessions: profile {profile.path.name} has no recorded live sessions yet; "
                f"run `asr-app transcribe --live --profile {profile.path.name}` first"
            )
        paths += sessions
    try:
        return tuple(str(f) for f in find_audio(paths))
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None


def _refresh_options(args, profile):
    """The options of `--refresh [MODEL]` (see asr_app.adapt.refresh), after saying what is new."""
    import argparse

    from asr_app.adapt.refresh import RUN_OPTIONS, refresh_options, source_model
    from asr_app.cli.adapt_args import add_arguments

    defaults = vars(add_arguments(argparse.ArgumentParser().add_subparsers()).parse_args([]))
    kept = {"profile", "profile_dir", "refresh", "quiet", "no_control", *RUN_OPTIONS}
    given = sorted(k for k, v in vars(args).items() if k in defaults and k not in kept and v != defaults[k])
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(
            f"--refresh keeps the model's own options, so {flags} would not apply; leave them out, or adapt "
            "again without --refresh to change them"
        )
    model = source_model(profile, args.refresh or None)
    given_run = {k: getattr(args, k) for k in RUN_OPTIONS} | {"device": resolve_train_device(args.device)}
    opts, new = refresh_options(profile, model, {k: v for k, v in given_run.items() if v is not None})
    print(
        f"refreshing {model['name']}: {len(new['takes'])} new takes ({new['takes_s'] / 60:.1f} min), "
        f"{len(new['live_sessions'])} new live sessions ({new['live_s'] / 60:.1f} min) beside "
        f"{new['old_s'] / 60:.1f} min from before; {100 * opts.refresh_share:.0f}% of a full run's "
        "training steps",
        file=sys.stderr,
    )
    return opts


def run(args) -> int:
    """`asr-app adapt`: AdaPTwin compression + adaptation of a profile (see asr_app.adapt)."""
    from asr_app.adapt import run_adapt

    profile = open_profile(args)
    opts = _refresh_options(args, profile) if args.refresh is not None else _adapt_options(args, profile)
    bars = _StageBars(quiet=args.quiet)
    if args.device == "auto":
        print(
            f"training on {'the CUDA GPU' if opts.device == 'cuda' else 'the CPU'} (--device to choose)",
            file=sys.stderr,
        )
    if not opts.replay and not opts.refresh_from:
        held_back = (
            "nothing but the layers left frozen (logit distillation needs the original's vocabulary)"
            if opts.changes_vocabulary
            else "distillation toward the original model only"
        )
        print(f"note: no --replay set of other voices given; forgetting is held back by {held_back}", file=sys.stderr)
    report = run_adapt(profile, opts, bars)
    bars.close()
    _print_report(report, args)
    return 0


def _print_report(report, args) -> None:
    """Where the model went, the parameters removed, WER per set, advice and wall times."""
    p, r = report.params, report.params["removed_share"]
    print(f"model saved to {report.model_dir}")
    print(
        f"parameters: encoder attention {p['original']['encoder_attention']:,} -> "
        f"{p['compressed']['encoder_attention']:,} ({100 * r['encoder_attention']:.1f}% removed); encoder "
        f"{p['original']['encoder']:,} -> {p['compressed']['encoder']:,} ({100 * r['encoder']:.1f}%); "
        f"whole model {p['original']['model']:,} -> {p['compressed']['model']:,} ({100 * r['model']:.1f}%)"
    )
    if r.get("decoder") and report.tokenizer:
        print(
            f"decoder (the token embedding of the new vocabulary) {p['original']['decoder']:,} -> "
            f"{p['compressed']['decoder']:,} ({100 * r['decoder']:.1f}% removed)"
        )
    elif r.get("decoder"):
        parts = " and ".join(
            n
            for n, on in (
                ("feed-forward", args.decoder_keep is not None),
                ("attention", args.decoder_attention_rank is not None),
            )
            if on
        )
        print(
            f"decoder ({parts} factored; token embedding dense) {p['original']['decoder']:,} -> "
            f"{p['compressed']['decoder']:,} ({100 * r['decoder']:.1f}% removed)"
        )
    if report.tokenizer:
        t = report.tokenizer
        print(
            f"tokens per word on the {t['text']}: {t['original']:.3f} -> {t['compressed']:.3f} "
            f"(decoder steps per word with the new vocabulary)"
        )
    if report.footprint:
        o, c = report.footprint["original"], report.footprint["compressed"]
        print(
            f"int8 ONNX on disk {o['int8_bytes'] / 1e6:.1f} MB -> {c['int8_bytes'] / 1e6:.1f} MB; decoder "
            f"{o['decoder_ms_per_token']:.2f} -> {c['decoder_ms_per_token']:.2f} ms per token (onnxruntime)"
        )
    for set_name, row in report.wer.items():
        cells = "  ".join(f"{k} {v:.2f}%" for k, v in row.items() if k not in ("set", "utterances"))
        print(f"WER on {set_name} ({row['set']}, {row['utterances']} utts): {cells}")
    for note in report.notes:
        print("note: " + note)
    if (advice := report.advice()) is not None:
        print("note: " + advice)
    times = {k: v["wall_s"] for k, v in report.stages.items() if isinstance(v, dict) and v.get("wall_s") is not None}
    print("wall time: " + ", ".join(f"{k} {t:.0f} s" for k, t in times.items()))
    print(f"report written to {Path(report.model_dir) / 'report.json'}")
