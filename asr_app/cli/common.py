"""What the `asr-app` commands share: exit codes, option defaults, model and decoding
arguments, profile lookup, audio sources and model loading with first-use progress.

Option defaults are read from the library's option dataclasses (`field_default`), so the
command line and the library cannot drift apart; help strings that state a default format
it from the same value.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

EXIT_FAILURES = 1  # some inputs failed, the rest were processed
EXIT_USAGE = 2

# The command line runs models on onnxruntime by default; the library's own default
# (TranscribeOptions.backend, load_model) stays torch for callers that hold a torch model.
CLI_BACKEND = "onnx"


def field_default(cls, name: str):
    """The default of field `name` of the dataclass `cls` (a default_factory is called).

    Raises:
        KeyError: `cls` has no field `name`, or the field has no default.
    """
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise KeyError(f"{cls.__name__}.{name} has no default")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def choice_help(descriptions: dict[str, str], default: str, prefix: str = "", suffix: str = "") -> str:
    """Help for an option with choices: each choice's description, "(default)" after the default's.

    E.g. {"joint": "product twins", "separate": "Q and K truncated separately"}, "joint"
    -> "product twins (default) or Q and K truncated separately".
    """
    parts = [d + (" (default)" if c == default else "") for c, d in descriptions.items()]
    return prefix + " or ".join(parts) + suffix


def add_command(
    sub, name: str, help: str, examples: str, formatter_class=argparse.RawDescriptionHelpFormatter
) -> argparse.ArgumentParser:
    """A subcommand parser whose description is `help` and whose epilog is `examples`, as written."""
    return sub.add_parser(name, help=help, description=help, epilog=examples, formatter_class=formatter_class)


# -- model and decoding arguments ------------------------------------------------------------
def add_model_args(
    p: argparse.ArgumentParser, profile_help: str | None = "use this profile's adapted model", run_options: bool = True
) -> None:
    """--model and --profile; with `run_options`, how the model runs (--device, --threads, --backend)."""
    from asr_app.models import BACKENDS, BUILTIN_MODELS, DEFAULT_MODEL
    from asr_app.transcribe import TranscribeOptions

    device = field_default(TranscribeOptions, "device")
    threads = field_default(TranscribeOptions, "threads")
    quantize = field_default(TranscribeOptions, "quantize")
    p.add_argument(
        "--model",
        default=None,
        help=f"built-in name ({', '.join(BUILTIN_MODELS)}; default {DEFAULT_MODEL}), "
        "a CTranslate2, Hugging Face or `asr-app export` folder, or a hub id",
    )
    if profile_help:  # commands that run a model may run a profile's adapted one
        p.add_argument("--profile", default=None, help=profile_help + " (from `asr-app adapt`)")
        p.add_argument("--profile-dir", default=None, help="a profile folder outside the default place")
    p.set_defaults(model_from_profile=bool(profile_help), device=device, threads=threads, backend=CLI_BACKEND)
    if run_options:
        devices = {
            "cpu": "cpu",
            "cuda": "cuda: a CUDA GPU (torch backend: a CUDA build of torch; onnx backend: onnxruntime-gpu)",
        }
        p.add_argument("--device", choices=tuple(devices), default=device, help=choice_help(devices, device))
        p.add_argument("--threads", type=int, default=threads, help="CPU threads (default: the backend's choice)")
        p.add_argument(
            "--backend",
            choices=BACKENDS,
            default=CLI_BACKEND,
            help="onnx (default): onnxruntime on the model's ONNX export, made on first use; torch: "
            "PyTorch eager float32 (an `asr-app export` folder always runs on onnx)",
        )
    p.add_argument(
        "--quantize",
        choices=("int8", "fp16", "none"),
        default=quantize,
        help=f"weights of the ONNX export made on first use (default {quantize})",
    )


def add_decoding_args(p: argparse.ArgumentParser) -> None:
    """--language, --task, --beam-size, --best-of, --temperature and the timestamp and context flags."""
    from asr_app.decoding import DecodingOptions

    tasks = {"transcribe": "transcribe", "translate": "translate into English"}
    task = field_default(DecodingOptions, "task")
    beam_size = field_default(DecodingOptions, "beam_size")
    temperatures = " ".join(f"{t:g}" for t in field_default(DecodingOptions, "temperatures"))
    p.add_argument(
        "--language",
        default=field_default(DecodingOptions, "language"),
        help="language code, e.g. en, fr (multilingual models); default: detect",
    )
    p.add_argument(
        "--task", choices=tuple(tasks), default=task, help=choice_help(tasks, task, suffix=" (multilingual models)")
    )
    p.add_argument("--beam-size", type=int, default=beam_size, help=f"1 = greedy (default {beam_size})")
    p.add_argument(
        "--best-of",
        type=int,
        default=field_default(DecodingOptions, "best_of"),
        help="candidates sampled at each fallback temperature",
    )
    p.add_argument(
        "--temperature",
        type=float,
        nargs="+",
        default=None,  # None: DecodingOptions' own
        help=f"temperatures for fallback decoding (default: {temperatures})",
    )
    p.add_argument("--without-timestamps", action="store_true", help="decode without timestamp tokens")
    p.add_argument(
        "--encoder-padding",
        type=float,
        default=None,
        metavar="SECONDS",
        help="a CALD model (adapt --methods cald, torch backend) encodes only the audio and this much of "
        "Whisper's padding, live mode only new audio: faster, less accurate (default: the whole 30-s window)",
    )
    p.add_argument(
        "--condition-on-previous-text",
        action="store_true",
        help="prompt each 30 s window with the previous window's text",
    )


def transcribe_options(args, vad: bool):
    """The `TranscribeOptions` of the parsed model and decoding arguments, VAD on or off."""
    from asr_app.decoding import DecodingOptions
    from asr_app.transcribe import TranscribeOptions

    dec = DecodingOptions(
        language=args.language,
        task=args.task,
        beam_size=args.beam_size,
        best_of=args.best_of,
        without_timestamps=args.without_timestamps,
        encoder_padding_s=args.encoder_padding,
        **({"temperatures": tuple(args.temperature)} if args.temperature else {}),
    )
    return TranscribeOptions(
        model=args.model,
        device=args.device,
        threads=args.threads,
        backend=args.backend,
        quantize=args.quantize,
        decoding=dec,
        vad=vad,
        condition_on_previous_text=args.condition_on_previous_text,
    )


# -- profiles -----------------------------------------------------------------------------------
def open_profile(args):
    """The existing profile of --profile / --profile-dir.

    Raises:
        ProfileError: neither given, a bad name, or no profile there.
    """
    from asr_app.enroll.profile import Profile, profile_path

    return Profile.open(profile_path(args.profile, args.profile_dir))


def resolve_model(args) -> None:
    """Fill args.model: --model if given, else the --profile's latest adapted model, else the default."""
    from asr_app.models import DEFAULT_MODEL

    if args.model is None and args.model_from_profile and (args.profile or args.profile_dir):
        profile = open_profile(args)
        models = profile.meta().get("models", [])
        if models:
            args.model = str(profile.path / models[-1]["path"])
            print(f"model: {models[-1]['name']} from profile {profile.path.name}", file=sys.stderr)
        else:
            print(
                f"profile {profile.path.name} has no adapted model yet (run `asr-app adapt --profile "
                f"{profile.path.name}`); using {DEFAULT_MODEL}",
                file=sys.stderr,
            )
    if args.model is None:
        args.model = DEFAULT_MODEL


# -- inputs ---------------------------------------------------------------------------------------
def audio_source(args):
    """`--input FILE` (played at `--speed`) or the microphone."""
    if args.input:
        from asr_app.sources import FileSource

        return FileSource(args.input, speed=args.speed)
    from asr_app.tui.microphone import MicrophoneSource

    return MicrophoneSource()


def dataset_or_file(target: Path, filter_glob, limit):
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


# -- loading a model ------------------------------------------------------------------------------
class FirstUseProgress:
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

            print(
                f"first use of {self.model}: preparing it once (converted and exported into the model cache; "
                "later runs start at once)",
                file=sys.stderr,
            )
            self.bar = tqdm(total=total, desc=step, file=sys.stderr, bar_format="  {n}/{total} {desc} [{elapsed}]")
        self.bar.total = total
        self.bar.n = done
        self.bar.set_description_str(step, refresh=True)
        if done >= total:
            self.bar.close()


def load_bundle(args):
    """The model of --model / --profile on --backend, with --threads applied."""
    from asr_app.models import load_model

    if args.threads and args.backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    return load_model(
        args.model, args.device, args.backend, args.threads, args.quantize, on_progress=FirstUseProgress(args.model)
    )
