"""`asr-app` command line: parses, builds option dataclasses, calls the library, formats.

Every user-facing failure is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from asr_app.errors import AsrAppError

EXIT_FAILURES = 1  # some inputs failed, the rest were processed
EXIT_USAGE = 2


def _add_model_args(p: argparse.ArgumentParser, profile_help: str | None = "use this profile's adapted model",
                    run_options: bool = True) -> None:
    """--model and --profile; with `run_options`, how the model runs (--device, --threads, --backend)."""
    from asr_app.models import BACKENDS, BUILTIN_MODELS, DEFAULT_MODEL

    p.add_argument("--model", default=None,
                   help=f"built-in name ({', '.join(BUILTIN_MODELS)}; default {DEFAULT_MODEL}), "
                        "a CTranslate2, Hugging Face or `asr-app export` folder, or a hub id")
    if profile_help:  # commands that run a model may run a profile's adapted one
        p.add_argument("--profile", default=None, help=profile_help + " (from `asr-app adapt`)")
        p.add_argument("--profile-dir", default=None, help="a profile folder outside the default place")
    p.set_defaults(model_from_profile=bool(profile_help), device="cpu", threads=None, backend="onnx")
    if run_options:
        p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="cpu (default) or cuda: a CUDA GPU (torch backend: a CUDA build of torch; "
                            "onnx backend: onnxruntime-gpu)")
        p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the backend's choice)")
        p.add_argument("--backend", choices=BACKENDS, default="onnx",
                       help="onnx (default): onnxruntime on the model's ONNX export, made on first use; torch: "
                            "PyTorch eager float32 (an `asr-app export` folder always runs on onnx)")
    p.add_argument("--quantize", choices=("int8", "fp16", "none"), default="int8",
                   help="weights of the ONNX export made on first use (default int8)")


def _resolve_model(args) -> None:
    """Fill args.model: --model if given, else the --profile's latest adapted model, else the default."""
    from asr_app.models import DEFAULT_MODEL

    if args.model is None and args.model_from_profile and (args.profile or args.profile_dir):
        from asr_app.enroll.profile import Profile, profile_path

        profile = Profile.open(profile_path(args.profile, args.profile_dir))
        models = profile.meta().get("models", [])
        if models:
            args.model = str(profile.path / models[-1]["path"])
            print(f"model: {models[-1]['name']} from profile {profile.path.name}", file=sys.stderr)
        else:
            print(f"profile {profile.path.name} has no adapted model yet (run `asr-app adapt --profile "
                  f"{profile.path.name}`); using {DEFAULT_MODEL}", file=sys.stderr)
    if args.model is None:
        args.model = DEFAULT_MODEL


def _add_decoding_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--language", default=None, help="language code, e.g. en, fr (multilingual models); "
                                                     "default: detect")
    p.add_argument("--task", choices=("transcribe", "translate"), default="transcribe",
                   help="transcribe (default) or translate into English (multilingual models)")
    p.add_argument("--beam-size", type=int, default=1, help="1 = greedy (default)")
    p.add_argument("--best-of", type=int, default=5, help="candidates sampled at each fallback temperature")
    p.add_argument("--temperature", type=float, nargs="+", default=None,
                   help="temperatures for fallback decoding (default: 0 0.2 0.4 0.6 0.8 1.0)")
    p.add_argument("--without-timestamps", action="store_true", help="decode without timestamp tokens")
    p.add_argument("--condition-on-previous-text", action="store_true",
                   help="prompt each 30 s window with the previous window's text")


def _audio_source(args):
    """`--input FILE` (played at `--speed`) or the microphone."""
    if args.input:
        from asr_app.sources import FileSource

        return FileSource(args.input, speed=args.speed)
    from asr_app.tui.microphone import MicrophoneSource

    return MicrophoneSource()


def _dataset_or_file(target: Path, filter_glob, limit):
    """The labelled set at `target`, or None when `target` is a single audio file.

    Raises:
        DatasetError: `target` is neither.
    """
    from asr_app.datasets import load_dataset
    from asr_app.errors import DatasetError

    try:
        return load_dataset(target, filter_glob, limit)
    except DatasetError:
        if not target.is_file():
            raise
        return None


class _FirstUseProgress:
    """Says once what a model's first use is doing (conversion, ONNX export), with a bar.

    Called as (step, done, total) by `load_model` and `onnx_model_dir`; nothing is printed
    when the model is already converted and exported.
    """

    def __init__(self, model: str, enabled: bool = True):
        self.model = model
        self.enabled = enabled
        self.bar = None

    def __call__(self, step: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            print(f"first use of {self.model}: preparing it once (converted and exported into the model cache; "
                  "later runs start at once)", file=sys.stderr)
            self.bar = tqdm(total=total, desc=step, file=sys.stderr, bar_format="  {n}/{total} {desc} [{elapsed}]")
        self.bar.total = total
        self.bar.n = done
        self.bar.set_description_str(step, refresh=True)
        if done >= total:
            self.bar.close()


def _load_bundle(args):
    """The model of --model / --profile on --backend, with --threads applied."""
    from asr_app.models import load_model

    if args.threads and args.backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    return load_model(args.model, args.device, args.backend, args.threads, args.quantize,
                      on_progress=_FirstUseProgress(args.model))


def _transcribe_options(args, vad: bool):
    from asr_app.decoding import DecodingOptions
    from asr_app.transcribe import TranscribeOptions

    dec = DecodingOptions(language=args.language, task=args.task, beam_size=args.beam_size,
                          best_of=args.best_of, without_timestamps=args.without_timestamps,
                          **({"temperatures": tuple(args.temperature)} if args.temperature else {}))
    return TranscribeOptions(model=args.model, device=args.device, threads=args.threads, backend=args.backend,
                             quantize=args.quantize, decoding=dec, vad=vad,
                             condition_on_previous_text=args.condition_on_previous_text)


# -- transcribe ----------------------------------------------------------------------------
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
        self.bar = tqdm(total=max(total_audio_s, 1e-6), disable=not self.enabled or total_files == 0,
                        file=self.file, bar_format="{percentage:3.0f}%|{bar}| {desc} [{elapsed}<{remaining}]")
        self._postfix()

    def _postfix(self):
        rtf = self.decode_s / self.audio_done_s if self.audio_done_s else 0.0
        digits = 1 if self.total_audio_s < 100 else 0
        self.bar.set_description_str(f"{self.counted_s:.{digits}f}/{self.total_audio_s:.{digits}f} s audio, files "
                                     f"{self.files_done}/{self.total_files}, {self.audio_done_s / 3600:.3f} h done, "
                                     f"RTF {rtf:.3f}", refresh=True)

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


def cmd_transcribe(args) -> int:
    """`asr-app transcribe`: files and folders in batch (resumable), or `--live`; returns the exit code."""
    from asr_app.batch import plan_jobs, run_batch
    from asr_app.outputs import FORMATS
    from asr_app.transcribe import Transcriber

    if args.live:
        return cmd_live(args)
    if not args.paths:
        raise AsrAppError("give at least one audio file or folder to transcribe")
    formats = FORMATS if "all" in args.format else tuple(dict.fromkeys(args.format))
    jobs = plan_jobs(args.paths, Path(args.output_dir))
    transcriber = Transcriber(_transcribe_options(args, vad=not args.no_vad),
                              on_progress=_FirstUseProgress(args.model, enabled=not args.quiet))

    def show(job, transcript):
        progress.bar.write(f"{job.audio}", file=sys.stdout)
        for s in transcript.segments:
            progress.bar.write(f"  [{s.start_s:8.2f} --> {s.end_s:8.2f}] {s.text.strip()}", file=sys.stdout)
        if not transcript.segments:
            progress.bar.write("  (no speech)", file=sys.stdout)

    progress = _TqdmProgress(enabled=not args.quiet)
    result = run_batch(jobs, transcriber, formats, overwrite=args.overwrite, progress=progress,
                       on_transcript=None if args.quiet else show)
    if result.skipped:
        print(f"skipped {len(result.skipped)} file(s) already transcribed in {args.output_dir} "
              "(--overwrite to redo)", file=sys.stderr)
    print(f"transcribed {len(result.done)} file(s) into {args.output_dir}", file=sys.stderr)
    if result.failed:
        print(f"{len(result.failed)} file(s) failed:", file=sys.stderr)
        for reason in result.failed.values():
            print(f"  {reason}", file=sys.stderr)
        return EXIT_FAILURES
    return 0


def cmd_live(args) -> int:
    """`transcribe --live`: microphone (or --input FILE) through the streaming transcriber."""
    from asr_app.live import LiveSession, run_live

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
    source = _audio_source(args)
    session = LiveSession(_load_bundle(args), reference=reference, prompts=prompts)
    save_dir = Path(args.save_dir) if args.save_dir else None
    if args.no_tui:
        if prompts:
            print(f"read: {session.current_prompt}", file=sys.stderr)

        def on_event(kind, payload):
            if kind == "update" and payload.committed:
                print(payload.committed, flush=True)

        print(f"{'replaying ' + args.input if args.input else 'listening'} (Ctrl-C ends the session)",
              file=sys.stderr, flush=True)
        try:
            why = run_live(session, source, on_event)
        finally:
            folder = session.save(save_dir)
        if why == "interrupted":
            print("stopped (Ctrl-C); everything heard was committed", file=sys.stderr)
        if session.tracks_wer:
            errors = session.wer.errors()
            counts = errors.counts
            print(f"WER {100 * counts.wer:.2f}% over {counts.reference_words} words read (S {counts.substitutions}, "
                  f"D {counts.deletions}, I {counts.insertions})", file=sys.stderr)
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


# -- eval ----------------------------------------------------------------------------------
def cmd_eval(args) -> int:
    """`asr-app eval`: corpus-level WER of a model on a dataset; returns the exit code."""
    from tqdm import tqdm

    from asr_app.datasets import load_dataset
    from asr_app.evaluate import evaluate
    from asr_app.outputs import atomic_write_text
    from asr_app.transcribe import Transcriber

    split = args.split
    if (args.profile or args.profile_dir) and not args.dataset:
        from asr_app.enroll.profile import Profile, profile_path

        args.dataset = str(Profile.open(profile_path(args.profile, args.profile_dir)).path / "manifest.jsonl")
        split = split or "heldout"
    if not args.dataset:
        raise AsrAppError("give a DATASET (folder or manifest) or --profile NAME")
    utts = load_dataset(args.dataset, args.filter, args.limit, split=split)
    transcriber = Transcriber(_transcribe_options(args, vad=args.vad),
                              on_progress=_FirstUseProgress(args.model, enabled=not args.quiet))
    name = args.dataset + (f" [{args.filter}]" if args.filter else "") + (f" split={split}" if split else "")
    with tqdm(total=len(utts), unit="utt", file=sys.stderr, disable=args.quiet) as bar:
        report = evaluate(utts, transcriber, name, on_utterance=lambda row: bar.update(1))
    t = report.total
    backend = getattr(transcriber.bundle, "backend", "torch")
    quant = f" {transcriber.bundle.config['quantize']}" if backend == "onnx" else ""
    print(f"model {report.model} ({backend}{quant})  dataset {name}  utterances {len(report.utterances)}  "
          f"audio {report.audio_s / 60:.2f} min")
    print(f"WER {100 * t.wer:.2f}%  (S {t.substitutions}, D {t.deletions}, I {t.insertions}, "
          f"N {t.reference_words})  RTF {report.rtf:.3f}")
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


# -- bench ---------------------------------------------------------------------------------
def cmd_bench_live(args) -> int:
    """Replay through the streaming transcriber on a simulated clock (see streaming_bench)."""
    from asr_app.audio import load_audio
    from asr_app.outputs import atomic_write_text
    from asr_app.streaming_bench import live_bench, select_clips

    target = Path(args.target)
    bundle = _load_bundle(args)
    utts = _dataset_or_file(target, args.filter, args.limit)
    if utts is not None:
        chosen = select_clips(utts, args.minutes)
        result = live_bench(bundle, clips=[load_audio(u.audio) for u in chosen],
                            reference=" ".join(u.text for u in chosen))
        result["clips"] = len(chosen)
    else:
        result = live_bench(bundle, audio=load_audio(target))
    result = {"model": bundle.name, "backend": getattr(bundle, "backend", "torch"), "target": str(target), **result}
    print(f"live bench: model {bundle.name} on {result['backend']}, {result['audio_s'] / 60:.2f} min of audio, "
          f"{result['phrases']} phrases")
    print(f"end-of-phrase latency: median {result['eop_latency_median_s']} s, p90 {result['eop_latency_p90_s']} s")
    print(f"word emission lag:     median {result['word_lag_median_s']} s, p90 {result['word_lag_p90_s']} s")
    print(f"RTF {result['rtf']} (offline {result['offline_rtf']}), flicker {result['flicker_words']} of "
          f"{result['tentative_words_shown']} tentative words ({100 * result['flicker_rate']:.1f}%)")
    if "streaming_wer" in result:
        def errors(name):
            e = result[f"{name}_errors"]
            return (f"{result[f'{name}_wer']:.2f}% (S {e['substitutions']}, D {e['deletions']}, "
                    f"I {e['insertions']} of {e['reference_words']})")

        print(f"WER: streaming {errors('streaming')}, offline {errors('offline')} (same audio)")
    print(f"longest run of words offline heard and streaming missed: {result['longest_run_missed_vs_offline']}")
    if args.report:
        atomic_write_text(Path(args.report), json.dumps(result, indent=2, ensure_ascii=False))
        print(f"report written to {args.report}")
    return 0


def cmd_bench(args) -> int:
    """`asr-app bench`: RTF, latency and memory against the reference in the same run; returns the exit code."""
    if args.live:
        return cmd_bench_live(args)
    from asr_app.bench import BenchConfig, results_to_dict, run_bench
    from asr_app.outputs import atomic_write_text

    target = Path(args.target)
    utts = _dataset_or_file(target, args.filter, args.limit)
    if utts is not None:
        audio = tuple((u.id, str(u.audio), u.text) for u in utts)
    else:
        audio = ((target.name, str(target), None),)
    from asr_app.compression.adaptwin.checkpoint import compression_block

    block = compression_block(args.model)  # an adapted model is measured beside its base
    reference = block["base_model"] if block else None
    from asr_app.onnx_backend import is_onnx_dir

    if is_onnx_dir(args.model):  # an export folder runs on onnxruntime at its own quantization
        args.backend, args.quantize = "onnx", json.loads((Path(args.model) / "config.json").read_text())["quantize"]
    ours = "asr-app" if args.backend == "torch" else f"asr-app/onnx-{args.quantize}"
    engines = (ours,) + ((f"{ours}:{reference}",) if reference else ())
    if "none" not in args.faster_whisper:  # `--faster-whisper none` measures asr-app alone
        engines += tuple(f"faster-whisper:{ct}" for ct in dict.fromkeys(args.faster_whisper))
    cfg = BenchConfig(model=args.model, audio=audio, threads=args.threads or os.cpu_count() or 1,
                      beam_size=args.beam_size, engines=engines, device=args.device, reference_model=reference,
                      whole_command=not args.no_command)
    print(f"bench: model {cfg.model}, {len(audio)} file(s), {cfg.threads} thread(s), beam {cfg.beam_size}, "
          f"backend {args.backend}", file=sys.stderr)
    results = run_bench(cfg, on_progress=_FirstUseProgress(args.model))
    print("decoding (VAD off, the audio already in memory; peak = the engine process) and the whole command "
          "(one process from start to exit, VAD on, transcripts written)")
    print(f"{'engine':<34} {'load s':>7} {'audio s':>8} {'decode s':>9} {'RTF':>7} {'peak MB':>8} {'WER %':>7} "
          f"{'cmd s':>7} {'cmd MB':>7}")
    for r in results:
        if r.error:
            print(f"{r.engine:<34} error: {r.error}")
            continue
        wer = f"{r.wer:7.2f}" if r.wer is not None else f"{'-':>7}"
        cmd = (f"{r.command_wall_s:7.2f} {r.command_peak_mb:7.0f}" if r.command_wall_s is not None
               else f"{'-':>7} {'-':>7}")
        print(f"{r.engine:<34} {r.load_s:7.2f} {r.audio_s:8.1f} {r.decode_s:9.2f} {r.rtf:7.4f} {r.peak_rss_mb:8.0f} {wer} "
              f"{cmd}")
        if r.command_error:
            print(f"{'':<34} whole command failed: {r.command_error}")
    ours = [r for r in results if r.engine.startswith("asr-app") and not r.error]
    for other in results:
        if other.error or not other.rtf:
            continue
        for r in ours:
            if r is not other and (other.engine.startswith("faster-whisper") or r is results[0]):
                line = (f"{r.engine} / {other.engine}: RTF ratio {r.rtf / other.rtf:.2f}, "
                        f"peak memory ratio {r.peak_rss_mb / other.peak_rss_mb:.2f}")
                if r.command_wall_s and other.command_wall_s:
                    line += (f"; whole command: wall time ratio {r.command_wall_s / other.command_wall_s:.2f}, "
                             f"peak memory ratio {r.command_peak_mb / other.command_peak_mb:.2f}")
                print(line)
    if args.report:
        atomic_write_text(Path(args.report), json.dumps(results_to_dict(cfg, results), indent=2))
        print(f"report written to {args.report}")
    return 0


# -- export --------------------------------------------------------------------------------
def cmd_export(args) -> int:
    """`asr-app export`: the model (or the profile's adapted one) as ONNX graphs."""
    import json

    from asr_app.models import onnx_model_dir

    folder = onnx_model_dir(args.model, args.quantize, out=args.out, overwrite=True,
                            on_progress=_FirstUseProgress(args.model))
    cfg = json.loads((folder / "config.json").read_text())
    sizes = {f.name: f.stat().st_size for f in folder.iterdir() if f.suffix == ".onnx"}
    print(f"exported {cfg['name']} ({cfg['quantize']}) to {folder}")
    for name, size in sorted(sizes.items()):
        print(f"  {name:<14} {size / 1e6:8.1f} MB")
    print(f"run it with: asr-app transcribe --model {folder} FILES")
    return 0


# -- enroll / profiles ------------------------------------------------------------------------
def _asr_check(args):
    """audio -> text with the chosen model, for the misreading check; None when disabled."""
    if args.no_asr_check:
        return None
    from asr_app.transcribe import TranscribeOptions, Transcriber

    transcriber = Transcriber(TranscribeOptions(model=args.model, device=args.device, threads=args.threads, vad=False,
                                                backend=args.backend, quantize=args.quantize),
                              on_progress=_FirstUseProgress(args.model))
    return lambda audio: transcriber.transcribe_audio(audio).text


def cmd_enroll(args) -> int:
    """`asr-app enroll`: record prompted takes into a profile, resuming a session; returns the exit code."""
    from asr_app.enroll.profile import Profile, profile_path
    from asr_app.enroll.quality import QualityOptions
    from asr_app.enroll.session import profile_progress

    path = profile_path(args.profile, args.profile_dir)
    if args.status:
        profile = Profile.open(path)
        print(f"profile {path}")
        print(profile_progress(profile, args.target_hours).summary())
        return 0
    profile = Profile.create_or_open(path, speaker=args.speaker or args.profile or path.name)
    quality = QualityOptions(max_wer=args.max_wer)
    if args.import_dir:
        return _enroll_import(args, profile, quality)
    return _enroll_record(args, profile, quality)


def _enroll_import(args, profile, quality) -> int:
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
    print(f"imported {result.kept} take(s), {result.kept_s / 60:.2f} min, into {profile.path}"
          + (f"; {result.already} already there" if result.already else "")
          + (f"; {len(result.rejected)} rejected" if result.rejected else ""))
    print(profile_progress(profile, args.target_hours).summary())
    return 0


def _enroll_record(args, profile, quality) -> int:
    from asr_app.enroll.prompts import builtin_prompts, prompts_from_file
    from asr_app.enroll.session import EnrollSession, run_session

    prompts = prompts_from_file(args.prompts) if args.prompts else builtin_prompts()
    source = _audio_source(args)
    session = EnrollSession(profile, prompts, _asr_check(args), quality, target_hours=args.target_hours,
                            source=source.name)
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


def cmd_profiles(args) -> int:
    """`asr-app profiles`: list enrollment profiles and their adapted models; returns the exit code."""
    from asr_app.enroll.profile import Profile, profiles_root

    root = profiles_root()
    found = sorted(p for p in root.iterdir() if (p / "profile.json").is_file()) if root.is_dir() else []
    if not found:
        print(f"no profiles yet in {root}: create one with `asr-app enroll --profile NAME`")
        return 0
    print(f"{'profile':<16} {'hours':>7} {'takes':>6} {'held out':>8} {'sessions':>8}  models")
    for path in found:
        prof = Profile(path)
        meta = prof.meta()
        takes = prof.takes()
        hours = sum(t.duration_s for t in takes) / 3600
        models = ", ".join(m.get("name", "?") for m in meta.get("models", [])) or "-"
        print(f"{path.name:<16} {hours:>7.2f} {len(takes):>6} {sum(t.split == 'heldout' for t in takes):>8} "
              f"{meta.get('sessions', 0):>8}  {models}")
    return 0


def resolve_train_device(device: str) -> str:
    """"auto" -> "cuda" when torch sees a CUDA GPU, else "cpu"; "cpu" and "cuda" unchanged
    (a missing GPU for "cuda" is reported when the model loads)."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cmd_adapt(args) -> int:
    """`asr-app adapt`: AdaPTwin compression + adaptation of a profile (see asr_app.adapt)."""
    from tqdm import tqdm

    from asr_app.adapt import AdaptOptions, run_adapt
    from asr_app.enroll.profile import Profile, profile_path

    profile = Profile.open(profile_path(args.profile, args.profile_dir))
    stages = tuple(s for s in ("layerwise", "finetune") if s not in (args.skip or []))
    opts = AdaptOptions(base=args.base, target_ratio=args.target_ratio, allocation=args.allocation,
                        data_aware=not args.plain, mode=args.qk, ffn=not args.attention_only,
                        ffn_method=args.ffn_method,
                        decoder_keep=args.decoder_keep, decoder_attention_rank=args.decoder_attention_rank,
                        lora_rank=args.lora_rank, finetune_lora=args.finetune_lora,
                        layerwise_epochs=args.layerwise_epochs,
                        finetune_epochs=args.finetune_epochs, batch_size=args.batch_size,
                        kd_weight=args.kd_weight, layerwise_teacher_input=args.layerwise_teacher_input,
                        layerwise_vtlp=args.layerwise_vtlp,
                        replay=tuple(args.replay or ()), replay_ratio=args.replay_ratio,
                        stages=stages, control=not args.no_control, general_set=args.general_set,
                        general_limit=args.general_limit, speaker_set=args.speaker_set,
                        speaker_filter=args.speaker_filter, time_budget_min=args.time_budget_min,
                        device=resolve_train_device(args.device), threads=args.threads, seed=args.seed,
                        varied_windows=not args.full_windows,
                        calibration_replay_share=args.calibration_replay_share,
                        speed_perturb=tuple(args.speed_perturb))
    bars: dict = {}

    def on_event(kind, payload):
        if kind == "stage":
            for bar in bars.values():
                bar.close()
            bars.clear()
            print(f"== {payload}", file=sys.stderr)
        elif kind == "progress" and not args.quiet:
            stage, done, total = payload[:3]
            if stage not in bars:
                bars[stage] = tqdm(total=total, desc=stage, unit="step" if len(payload) > 3 else "item", file=sys.stderr)
            bar = bars[stage]
            bar.n = done
            if len(payload) > 3:
                bar.set_postfix(loss=f"{payload[3]:.4f}", refresh=False)
            bar.refresh()
        elif kind == "info":
            print(payload, file=sys.stderr)

    if args.device == "auto":
        print(f"training on {'the CUDA GPU' if opts.device == 'cuda' else 'the CPU'} (--device to choose)",
              file=sys.stderr)
    if not opts.replay:
        print("note: no --replay set of other voices given; forgetting is held back by distillation "
              "toward the original model only", file=sys.stderr)
    report = run_adapt(profile, opts, on_event)
    for bar in bars.values():
        bar.close()
    p, r = report.params, report.params["removed_share"]
    print(f"model saved to {report.model_dir}")
    print(f"parameters: encoder attention {p['original']['encoder_attention']:,} -> "
          f"{p['compressed']['encoder_attention']:,} ({100 * r['encoder_attention']:.1f}% removed); encoder "
          f"{p['original']['encoder']:,} -> {p['compressed']['encoder']:,} ({100 * r['encoder']:.1f}%); "
          f"whole model {p['original']['model']:,} -> {p['compressed']['model']:,} ({100 * r['model']:.1f}%)")
    if r.get("decoder"):
        parts = " and ".join(n for n, on in (("feed-forward", opts.decoder_keep is not None),
                                             ("attention", opts.decoder_attention_rank is not None)) if on)
        print(f"decoder ({parts} factored; token embedding dense) {p['original']['decoder']:,} -> "
              f"{p['compressed']['decoder']:,} ({100 * r['decoder']:.1f}% removed)")
    for set_name, row in report.wer.items():
        cells = "  ".join(f"{k} {v:.2f}%" for k, v in row.items() if k not in ("set", "utterances"))
        print(f"WER on {set_name} ({row['set']}, {row['utterances']} utts): {cells}")
    if (advice := report.advice()) is not None:
        print("note: " + advice)
    print("wall time: " + ", ".join(f"{k} {v['wall_s']:.0f} s" for k, v in report.stages.items()))
    print(f"report written to {Path(report.model_dir) / 'report.json'}")
    return 0


def cmd_prompts(args) -> int:
    """Maintenance of prompt sets: measure coverage, or order sentences by coverage."""
    import json

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


# -- parser --------------------------------------------------------------------------------
EXAMPLES = {
    "transcribe": """examples:
  asr-app transcribe recordings/                      # every audio file in the folder, recursively
  asr-app transcribe talk.m4a --format srt txt --output-dir subs
  asr-app transcribe interview.flac --model base --language de
  asr-app transcribe --live                           # the microphone, in a terminal screen
  asr-app transcribe --live --input talk.flac --speed 0 --no-tui""",
    "eval": """examples:
  asr-app eval ../shared/data/librispeech/train-clean-5
  asr-app eval ../shared/data/ljspeech --filter 'LJ002-*' --report lj002.json
  asr-app eval --profile alice                        # the profile's held-out takes""",
    "bench": """examples:
  asr-app bench ../shared/data/samples/jfk.wav --faster-whisper int8
  asr-app bench ../shared/data/librispeech/train-clean-5 --threads 2 --faster-whisper none
  asr-app bench ../shared/data/ljspeech --filter 'LJ002-*' --live --minutes 5""",
    "export": """examples:
  asr-app export                                      # tiny.en, int8, into the model cache
  asr-app export --model base --quantize none --out base-onnx
  asr-app export --profile alice""",
    "enroll": """examples:
  asr-app enroll --profile alice                      # record with the microphone
  asr-app enroll --profile alice --status
  asr-app enroll --profile lj --import ../shared/data/ljspeech --filter 'LJ001-*'""",
    "prompts": """examples:
  asr-app prompts coverage                            # the built-in prompts
  asr-app prompts order mine.txt ordered.txt""",
    "adapt": """examples:
  asr-app adapt --profile alice
  asr-app adapt --profile alice --target-ratio 0.85 --general-set ../shared/data/librispeech/train-clean-5""",
    "profiles": """examples:
  asr-app profiles""",
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: the problem, then where the usage is."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _command(sub, name: str, help: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help, epilog=EXAMPLES[name],
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    """The `asr-app` argument parser with one subcommand per command."""
    from asr_app import __version__

    parser = _Parser(prog="asr-app", description="On-device Whisper speech recognition.")
    parser.add_argument("--version", action="version", version=f"asr-app {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "transcribe", "transcribe audio files and folders, or the microphone live")
    p.add_argument("paths", nargs="*", help="audio files and folders (searched recursively)")
    _add_model_args(p)
    _add_decoding_args(p)
    p.add_argument("--format", nargs="+", default=["all"], choices=("txt", "srt", "vtt", "json", "tsv", "all"),
                   help="output formats (default: all)")
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
    p.add_argument("--save-dir", default=None, help="with --live: save the session here (default: data dir)")
    p.set_defaults(func=cmd_transcribe)

    p = _command(sub, "eval", "word error rate on a labelled set")
    p.add_argument("dataset", nargs="?", help="LibriSpeech folder, LJSpeech folder, or manifest .jsonl "
                                              "(default with --profile: the profile's held-out takes)")
    p.add_argument("--split", default=None, choices=("train", "heldout"), help="manifest split to evaluate")
    _add_model_args(p, "use this profile's adapted model and, without DATASET, its held-out takes")
    _add_decoding_args(p)
    p.add_argument("--filter", default=None, help="keep utterance ids matching this glob, e.g. 'LJ002-*'")
    p.add_argument("--limit", type=int, default=None, help="first N utterances only")
    p.add_argument("--vad", action="store_true", help="apply VAD before decoding (off for eval by default)")
    p.add_argument("--report", default=None, help="write a JSON report with every utterance here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = _command(sub, "bench", "RTF, peak memory and load time, beside faster-whisper")
    p.add_argument("target", help="a dataset (as for eval), a folder of audio, or one audio file")
    _add_model_args(p)
    p.add_argument("--beam-size", type=int, default=1, help="beam width for every engine (1 = greedy, the default)")
    p.add_argument("--filter", default=None, help="keep utterance ids matching this glob, e.g. 'LJ002-*'")
    p.add_argument("--limit", type=int, default=None, help="first N utterances only")
    p.add_argument("--faster-whisper", nargs="*", default=["float32"], metavar="COMPUTE_TYPE",
                   choices=("float32", "int8", "int8_float32", "int16", "float16", "int8_float16", "bfloat16",
                            "none"),
                   help="also run faster-whisper with these compute types (default: float32; none to skip it)")
    p.add_argument("--report", default=None, help="write the figures as JSON here")
    p.add_argument("--no-command", action="store_true",
                   help="skip timing each engine as a whole command (process start to exit, VAD on)")
    p.add_argument("--live", action="store_true",
                   help="streaming figures instead: latency, word lag, RTF, flicker, streaming vs offline WER")
    p.add_argument("--minutes", type=float, default=5.0, help="with --live on a dataset: minutes of clips to join")
    p.set_defaults(func=cmd_bench)

    p = _command(sub, "export", "write the model (or a profile's adapted model) as ONNX for onnxruntime")
    _add_model_args(p, "export this profile's adapted model", run_options=False)
    p.add_argument("--out", default=None,
                   help="folder to write (default: inside an adapted model's folder, else the model cache)")
    p.set_defaults(func=cmd_export)

    p = _command(sub, "enroll", "record (or import) your voice into a profile")
    p.add_argument("--profile", default=None, help="profile name (kept in the user data folder)")
    p.add_argument("--profile-dir", default=None, help="keep the profile in this folder instead")
    p.add_argument("--speaker", default=None, help="speaker name stored in the profile (default: profile name)")
    p.add_argument("--prompts", default=None, help="text file to read from (split into sentences) "
                                                   "instead of the built-in prompts")
    p.add_argument("--target-hours", type=float, default=8.0, help="enrollment target (default 8)")
    p.add_argument("--input", default=None,
                   help="read this audio file instead of the microphone: a recording of you reading the "
                        "prompts shown, in order, with a pause after each (to import recordings of other "
                        "texts, use --import)")
    p.add_argument("--speed", type=float, default=1.0, help="with --input: 1 = real time, 0 = as fast as possible")
    p.add_argument("--import", dest="import_dir", default=None,
                   help="import recordings with transcripts (LibriSpeech, LJSpeech or manifest)")
    p.add_argument("--filter", default=None, help="with --import: utterance ids matching this glob")
    p.add_argument("--limit", type=int, default=None, help="with --import: first N utterances")
    p.add_argument("--status", action="store_true", help="show progress toward the target and exit")
    p.add_argument("--no-tui", action="store_true", help="plain text instead of the terminal UI")
    p.add_argument("--no-asr-check", action="store_true", help="skip the misreading check (no model needed)")
    p.add_argument("--max-wer", type=float, default=0.4, help="misreading check: reject takes above this WER")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_model_args(p, profile_help=None)
    p.set_defaults(func=cmd_enroll)

    p = _command(sub, "prompts", "prompt-set coverage (needs the [prompts] extra)")
    p.add_argument("action", choices=("coverage", "order"),
                   help="coverage: phoneme and phoneme-pair coverage of a prompt set; order: write the "
                        "sentences of SRC... to OUT in the order that covers the most phonemes soonest")
    p.add_argument("files", nargs="*", help="coverage: files to measure (default: built-in); order: SRC... OUT")
    p.set_defaults(func=cmd_prompts)

    p = _command(sub, "adapt", "compress and adapt Whisper to a profile's voice (AdaPTwin)")
    p.add_argument("--profile", default=None, help="the enrollment profile to adapt to")
    p.add_argument("--profile-dir", default=None, help="a profile folder outside the default place")
    p.add_argument("--base", default="tiny.en", help="base model: tiny.en, base, a folder or a hub id")
    p.add_argument("--target-ratio", type=float, default=0.55,
                   help="encoder parameters to keep (default 0.55: 45%% removed)")
    p.add_argument("--time-budget-min", type=float, default=None, help="wall-clock budget of the training stages")
    p.add_argument("--replay", nargs="*", default=None,
                   help="datasets or manifests of other voices mixed into fine-tuning (against forgetting)")
    p.add_argument("--replay-ratio", type=float, default=1.0, help="replay audio per minute of speaker audio")
    p.add_argument("--general-set", default=None,
                   help="dataset of other speakers for the report's general WER, e.g. LibriSpeech train-clean-5")
    p.add_argument("--general-limit", type=int, default=None, help="first N utterances of --general-set")
    p.add_argument("--speaker-set", default=None,
                   help="more labelled recordings of the same speaker to evaluate on (beyond held-out takes)")
    p.add_argument("--speaker-filter", default=None, help="utterance ids of --speaker-set to keep, e.g. 'LJ002-*'")
    p.add_argument("--allocation", choices=("sensitivity", "uniform"), default="sensitivity",
                   help="ranks per layer and head from measured sensitivity (default) or one rank everywhere")
    p.add_argument("--plain", action="store_true", help="plain SVD instead of speaker-whitened factors (ablation)")
    p.add_argument("--qk", choices=("joint", "separate"), default="joint",
                   help="product twins (default) or Q and K truncated separately (ablation)")
    p.add_argument("--attention-only", action="store_true", help="leave fc1/fc2 dense")
    p.add_argument("--ffn-method", choices=("lowrank", "prune"), default="lowrank",
                   help="encoder feed-forward blocks as low-rank fc1/fc2 pairs (default) or pruned to the hidden "
                        "neurons the same parameters buy, fc2 refit by least squares")
    p.add_argument("--decoder-keep", type=float, default=None, metavar="SHARE",
                   help="also factor the decoder's fc1/fc2, keeping this share of their parameters "
                        "(default: decoder dense)")
    p.add_argument("--decoder-attention-rank", type=int, default=None, metavar="R",
                   help="also factor every decoder self- and cross-attention at this rank per head "
                        "(head_dim is 64; the KV cache shrinks to R wide; default: dense)")
    p.add_argument("--skip", nargs="*", choices=("layerwise", "finetune"), help="leave out recovery stages (ablation)")
    p.add_argument("--no-control", action="store_true", help="skip the LoRA-only control model")
    p.add_argument("--lora-rank", type=int, default=64, help="rank of the LoRA adapters in recovery (default 64)")
    p.add_argument("--finetune-lora", choices=("encoder", "decoder", "both"), default="decoder",
                   help="where end-to-end fine-tuning puts its LoRA adapters (default: the decoder's linears; "
                        "the encoder stays as layer-wise distillation left it)")
    p.add_argument("--layerwise-epochs", type=float, default=2.0,
                   help="passes over the training windows in layer-wise distillation (default 2)")
    p.add_argument("--finetune-epochs", type=float, default=2.0,
                   help="passes over the training windows in end-to-end fine-tuning (default 2)")
    p.add_argument("--batch-size", type=int, default=2, help="30-second windows per training step (default 2)")
    p.add_argument("--kd-weight", type=float, default=0.5, help="weight of distillation toward the original")
    p.add_argument("--layerwise-teacher-input", type=float, default=1.0, metavar="W",
                   help="layer-wise distillation: weight of the term feeding each layer the original model's "
                        "input to it, beside its compressed predecessors' output (default 1; 0 turns it off)")
    p.add_argument("--layerwise-vtlp", type=float, default=0.0, metavar="V",
                   help="layer-wise distillation: warp each window's log-mel in frequency by a random factor in "
                        "[1-V, 1+V] (vocal tract length perturbation; default 0 = off)")
    p.add_argument("--full-windows", action="store_true",
                   help="pack every training window to 29 s (default: random fill lengths)")
    p.add_argument("--calibration-replay-share", type=float, default=0.0,
                   help="share of the whitening statistics taken from --replay audio (default 0: speaker only)")
    p.add_argument("--speed-perturb", type=float, nargs="*", default=[0.9, 1.1], metavar="SPEED",
                   help="train also on copies of the speaker and replay takes played at these speeds "
                        "(default 0.9 1.1; give none to turn it off)")
    p.add_argument("--seed", type=int, default=0, help="seed of window packing, sampling and initialization")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to train (default auto: a CUDA GPU when torch sees one, else the CPU)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for training (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_adapt)

    p = _command(sub, "profiles", "list enrollment profiles")
    p.set_defaults(func=cmd_profiles)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point. Returns the exit code."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        from asr_app.models import quiet_transformers_logging

        quiet_transformers_logging()
        if hasattr(args, "model"):
            _resolve_model(args)
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


if __name__ == "__main__":
    sys.exit(main())
