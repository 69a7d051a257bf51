"""`asr-app bench`: RTF, peak memory and load time beside faster-whisper, or streaming figures (`--live`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from asr_app.cli.common import (
    FirstUseProgress,
    add_command,
    add_model_args,
    dataset_or_file,
    field_default,
    load_bundle,
)

EXAMPLES = """examples:
  asr-app bench ../shared/data/samples/jfk.wav --faster-whisper int8
  asr-app bench ../shared/data/librispeech/train-clean-5 --threads 2 --faster-whisper none
  asr-app bench ../shared/data/ljspeech --filter 'LJ002-*' --live --minutes 5
  asr-app bench ../shared/data/ljspeech --filter 'LJ002-00*' --encoder --threads 2"""

FASTER_WHISPER_TYPES = ("float32", "int8", "int8_float32", "int16", "float16", "int8_float16", "bfloat16", "none")


def add_parser(sub) -> None:
    """Add the `bench` subcommand to the subparsers `sub`."""
    from asr_app.bench import BenchConfig

    beam_size = field_default(BenchConfig, "beam_size")
    p = add_command(sub, "bench", "RTF, peak memory and load time, beside faster-whisper", EXAMPLES)
    p.add_argument("target", help="a dataset (as for eval), a folder of audio, or one audio file")
    add_model_args(p)
    p.add_argument(
        "--beam-size",
        type=int,
        default=beam_size,
        help=f"beam width for every engine (1 = greedy; default {beam_size})",
    )
    p.add_argument("--filter", default=None, help="keep utterance ids matching this glob, e.g. 'LJ002-*'")
    p.add_argument("--limit", type=int, default=None, help="first N utterances only")
    p.add_argument(
        "--faster-whisper",
        nargs="*",
        default=["float32"],
        metavar="COMPUTE_TYPE",
        choices=FASTER_WHISPER_TYPES,
        help="also run faster-whisper with these compute types (default: float32; none to skip it)",
    )
    p.add_argument("--report", default=None, help="write the figures as JSON here")
    p.add_argument(
        "--no-command",
        action="store_true",
        help="skip timing each engine as a whole command (process start to exit, VAD on)",
    )
    p.add_argument(
        "--live",
        action="store_true",
        help="streaming figures instead: latency, word lag, RTF, flicker, streaming vs offline WER",
    )
    p.add_argument("--minutes", type=float, default=5.0, help="with --live on a dataset: minutes of clips to join")
    p.add_argument(
        "--encoder-padding",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --live on a CALD model: encode only the audio and this much padding (as transcribe)",
    )
    p.add_argument(
        "--encoder",
        action="store_true",
        help="encoder time against input length (3-120 s), Whisper's softmax beside CALD's linear-time "
        "encoder, offline and live (torch backend)",
    )
    p.add_argument("--repeats", type=int, default=5, help="with --encoder: timed runs per point (median)")
    p.set_defaults(func=run)


def run_live(args) -> int:
    """Replay through the streaming transcriber on a simulated clock (see streaming_bench)."""
    from asr_app.audio import load_audio
    from asr_app.cli.transcribe import live_options
    from asr_app.outputs import atomic_write_text
    from asr_app.streaming_bench import live_bench, select_clips

    target = Path(args.target)
    bundle = load_bundle(args)
    utts = dataset_or_file(target, args.filter, args.limit)
    if utts is not None:
        chosen = select_clips(utts, args.minutes)
        result = live_bench(
            bundle,
            clips=[load_audio(u.audio) for u in chosen],
            reference=" ".join(u.text for u in chosen),
            options=live_options(args),
        )
        result["clips"] = len(chosen)
    else:
        result = live_bench(bundle, audio=load_audio(target), options=live_options(args))
    result = {"model": bundle.name, "backend": bundle.backend, "target": str(target), **result}
    print(
        f"live bench: model {bundle.name} on {result['backend']}, {result['audio_s'] / 60:.2f} min of audio, "
        f"{result['phrases']} phrases"
    )
    print(f"end-of-phrase latency: median {result['eop_latency_median_s']} s, p90 {result['eop_latency_p90_s']} s")
    print(f"word emission lag:     median {result['word_lag_median_s']} s, p90 {result['word_lag_p90_s']} s")
    print(
        f"RTF {result['rtf']} (offline {result['offline_rtf']}), flicker {result['flicker_words']} of "
        f"{result['tentative_words_shown']} tentative words ({100 * result['flicker_rate']:.1f}%)"
    )
    if "streaming_wer" in result:

        def errors(name):
            e = result[f"{name}_errors"]
            return (
                f"{result[f'{name}_wer']:.2f}% (S {e['substitutions']}, D {e['deletions']}, "
                f"I {e['insertions']} of {e['reference_words']})"
            )

        print(f"WER: streaming {errors('streaming')}, offline {errors('offline')} (same audio)")
    print(f"longest run of words offline heard and streaming missed: {result['longest_run_missed_vs_offline']}")
    if args.report:
        atomic_write_text(Path(args.report), json.dumps(result, indent=2, ensure_ascii=False))
        print(f"report written to {args.report}")
    return 0


def run_encoder(args) -> int:
    """Encoder time against input length, softmax and CALD (see asr_app.encoder_bench)."""
    from asr_app.audio import load_audio
    from asr_app.errors import AsrAppError
    from asr_app.outputs import atomic_write_text

    args.backend = "torch"  # the streaming encoder is torch's (the ONNX graph runs whole windows)
    if args.repeats < 1:
        raise AsrAppError(f"--repeats must be at least 1, got {args.repeats}")
    target = Path(args.target)
    utts = dataset_or_file(target, args.filter, args.limit)
    paths = [u.audio for u in utts] if utts is not None else [target]
    bundle = load_bundle(args)
    import torch

    from asr_app.encoder_bench import LENGTHS_S, encoder_bench, format_report, speech_mel

    if args.threads:
        torch.set_num_threads(args.threads)
    clips, seconds = [], 0.0
    for path in paths:  # enough speech for the longest input (repeated if short)
        clips.append(load_audio(path))
        seconds += len(clips[-1]) / 16000
        if seconds >= max(LENGTHS_S):
            break
    mel = speech_mel(bundle.feature_extractor, clips, max(LENGTHS_S))
    result = {"model": bundle.name, "target": str(target), **encoder_bench(bundle.model, mel, repeats=args.repeats)}
    print(f"encoder bench: model {bundle.name}, {seconds:.0f} s of speech from {target}")
    print(format_report(result))
    if args.report:
        atomic_write_text(Path(args.report), json.dumps(result, indent=2))
        print(f"report written to {args.report}")
    return 0


def run(args) -> int:
    """`asr-app bench`: RTF, latency and memory against the reference in the same run; returns the exit code."""
    if args.live:
        return run_live(args)
    if args.encoder:
        return run_encoder(args)
    from asr_app.bench import BenchConfig, results_to_dict, run_bench
    from asr_app.outputs import atomic_write_text

    target = Path(args.target)
    utts = dataset_or_file(target, args.filter, args.limit)
    if utts is not None:
        audio = tuple((u.id, str(u.audio), u.text) for u in utts)
    else:
        audio = ((target.name, str(target), None),)
    from asr_app.compression.checkpoint import compression_block  # imports torch: after the input checks
    from asr_app.onnx import is_onnx_dir

    block = compression_block(args.model)  # an adapted model is measured beside its base
    reference = block["base_model"] if block else None
    if is_onnx_dir(args.model):  # an export folder runs on onnxruntime at its own quantization
        args.backend, args.quantize = "onnx", json.loads((Path(args.model) / "config.json").read_text())["quantize"]
    ours = "asr-app" if args.backend == "torch" else f"asr-app/onnx-{args.quantize}"
    engines = (ours,) + ((f"{ours}:{reference}",) if reference else ())
    if "none" not in args.faster_whisper:  # `--faster-whisper none` measures asr-app alone
        engines += tuple(f"faster-whisper:{ct}" for ct in dict.fromkeys(args.faster_whisper))
    cfg = BenchConfig(
        model=args.model,
        audio=audio,
        threads=args.threads or os.cpu_count() or 1,
        beam_size=args.beam_size,
        engines=engines,
        device=args.device,
        reference_model=reference,
        whole_command=not args.no_command,
    )
    print(
        f"bench: model {cfg.model}, {len(audio)} file(s), {cfg.threads} thread(s), beam {cfg.beam_size}, "
        f"backend {args.backend}",
        file=sys.stderr,
    )
    results = run_bench(cfg, on_progress=FirstUseProgress(args.model))
    _print_results(results)
    if args.report:
        atomic_write_text(Path(args.report), json.dumps(results_to_dict(cfg, results), indent=2))
        print(f"report written to {args.report}")
    return 0


def _print_results(results) -> None:
    """The table of engines, then each asr-app engine's RTF and memory ratios to the others."""
    print(
        "decoding (VAD off, the audio already in memory; peak = the engine process) and the whole command "
        "(one process from start to exit, VAD on, transcripts written)"
    )
    print(
        f"{'engine':<34} {'load s':>7} {'audio s':>8} {'decode s':>9} {'RTF':>7} {'peak MB':>8} {'WER %':>7} "
        f"{'cmd s':>7} {'cmd MB':>7}"
    )
    for r in results:
        if r.error:
            print(f"{r.engine:<34} error: {r.error}")
            continue
        wer = f"{r.wer:7.2f}" if r.wer is not None else f"{'-':>7}"
        cmd = (
            f"{r.command_wall_s:7.2f} {r.command_peak_mb:7.0f}"
            if r.command_wall_s is not None
            else f"{'-':>7} {'-':>7}"
        )
        print(
            f"{r.engine:<34} {r.load_s:7.2f} {r.audio_s:8.1f} {r.decode_s:9.2f} {r.rtf:7.4f} {r.peak_rss_mb:8.0f} {wer} "
            f"{cmd}"
        )
        if r.command_error:
            print(f"{'':<34} whole command failed: {r.command_error}")
    ours = [r for r in results if r.engine.startswith("asr-app") and not r.error]
    for other in results:
        if other.error or not other.rtf:
            continue
        for r in ours:
            if r is not other and (other.engine.startswith("faster-whisper") or r is results[0]):
                line = (
                    f"{r.engine} / {other.engine}: RTF ratio {r.rtf / other.rtf:.2f}, "
                    f"peak memory ratio {r.peak_rss_mb / other.peak_rss_mb:.2f}"
                )
                if r.command_wall_s and other.command_wall_s:
                    line += (
                        f"; whole command: wall time ratio {r.command_wall_s / other.command_wall_s:.2f}, "
                        f"peak memory ratio {r.command_peak_mb / other.command_peak_mb:.2f}"
                    )
                print(line)
