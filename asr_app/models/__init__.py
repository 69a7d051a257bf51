"""Whisper models: resolve a name, convert CTranslate2 weights, load for inference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from asr_app.errors import ModelError
from asr_app.models.bundle import Bundle, WhisperBundle, language_of_block, multilingual_of_block, special_tokens_of
from asr_app.models.resolver import BUILTIN_MODELS, DEFAULT_MODEL, ModelSource, converted_dir, find_model, local_source

__all__ = [
    "DEFAULT_MODEL",
    "BUILTIN_MODELS",
    "BACKENDS",
    "Bundle",
    "WhisperBundle",
    "language_of_block",
    "load_model",
    "find_model",
    "ModelSource",
    "onnx_model_dir",
    "quiet_transformers_logging",
]

BACKENDS = ("torch", "onnx")

# First-use preparation reports its steps to a callback: (what is being done, steps done,
# steps in all); the CLI draws them as one progress bar. Nothing is reported on later uses.
PrepareProgress = Callable[[str, int, int], None]


def quiet_transformers_logging() -> None:
    """Hide transformers' info logs and weight-loading progress bars (for CLI processes).

    Sets transformers' environment switches when it is not imported yet, so the ONNX
    backend (which never imports transformers or torch) does not pay for the import.
    """
    import os
    import sys

    if "transformers" not in sys.modules:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _export_key(source: ModelSource) -> str:
    """Changes whenever the source weights, config or tokenizer change (or the exporter)."""
    import hashlib

    from asr_app.onnx.export import FORMAT_VERSION

    h = hashlib.sha256(f"onnx-v{FORMAT_VERSION}:{source.location}".encode())
    root = Path(source.location)
    for name in ("model.safetensors", "model.bin", "config.json", "tokenizer.json"):
        p = root / name
        if p.is_file():
            st = p.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _needs_conversion(source: ModelSource) -> bool:
    from asr_app.models.resolver import is_converted

    return source.kind == "ct2" and not is_converted(source)


def onnx_model_dir(
    name: str = DEFAULT_MODEL,
    quantize: str = "int8",
    out: str | Path | None = None,
    overwrite: bool = False,
    on_progress: PrepareProgress | None = None,
) -> Path:
    """The ONNX export of a model, written on first use.

    Where: `out` if given; else an adapted model's own folder (`<model>/onnx-<quantize>`,
    so a profile stays self-contained); else the cache (`<cache>/onnx/`). An existing
    export is reused while its recorded source key matches the model's files.

    Args:
        name: as `load_model`; an export folder is returned as it is.
        quantize: "int8", "fp16" or "none" (used only when exporting).
        overwrite: export again even if a matching export exists.
        on_progress: told each step of a conversion and export, when one is needed.
    Raises:
        ModelError: as `load_model`; ExportError: the model cannot be exported.
    """
    import json

    from asr_app.models.resolver import cache_dir, cache_name
    from asr_app.onnx.runtime import is_onnx_dir

    source = find_model(name)
    if source.kind == "onnx":
        return Path(source.location)
    source = local_source(source)
    key = _export_key(source)
    cached = cache_dir() / "onnx" / f"{cache_name(source)}-{key}-{quantize}"
    beside = (
        Path(source.location) / f"onnx-{quantize}" if source.kind == "hf" and Path(source.location).is_dir() else None
    )

    def current(folder: Path | None) -> bool:
        if folder is None or overwrite or not is_onnx_dir(folder):
            return False
        cfg = json.loads((folder / "config.json").read_text())
        return cfg.get("source_key") == key and cfg.get("quantize") == quantize

    if out is not None:
        final = Path(out)
        if current(final):
            return final
    else:
        for folder in (beside, cached):  # reuse without importing torch
            if folder is not None and current(folder):
                return folder
        from asr_app.compression.checkpoint import is_compressed_dir

        final = beside if beside is not None and is_compressed_dir(source.location) else cached
    from asr_app.onnx.export import EXPORT_STEPS, export_model

    steps = ["converting the CTranslate2 weights"] * _needs_conversion(source) + ["loading the PyTorch model"]
    total = len(steps) + len(EXPORT_STEPS)
    report = on_progress or (lambda step, done, total: None)
    bundle = load_model(name, on_progress=lambda step, done, _: report(step, done, total))
    report(f"exporting to ONNX ({quantize})", len(steps), total)
    export_model(
        bundle,
        final,
        quantize,
        overwrite=True,
        source_key=key,
        on_step=lambda i, step: report(step, len(steps) + i, total),
    )
    report("exported", total, total)
    return final


def load_model(
    name: str = DEFAULT_MODEL,
    device: str = "cpu",
    backend: str = "torch",
    threads: int | None = None,
    quantize: str = "int8",
    on_progress: PrepareProgress | None = None,
):
    """Load a Whisper model by built-in name, folder or hub id (see `resolver`).

    Args:
        name: "tiny.en", "base", a CTranslate2 or Hugging Face folder, a compressed model
            folder written by `asr-app adapt`, an ONNX folder written by `asr-app export`
            (always run on onnxruntime), or a hub id.
        device: "cpu" or "cuda".
        backend: "torch" or "onnx" (onnxruntime; the model is exported into the cache at
            `quantize` on first use).
        threads: onnxruntime intra-op threads (the torch backend uses torch's setting).
        on_progress: told each step of a first-use conversion or export (nothing when the
            converted or exported model is already in the cache).
    Returns:
        A `Bundle` ready for `asr_app.decoding`: a `WhisperBundle` (backend "torch") or an
        `asr_app.onnx.OnnxWhisperBundle` (backend "onnx").
    Raises:
        ModelError: unknown name or backend, missing package, corrupt files, hub
            unreachable, or device "cuda" without a GPU.
    """
    if backend not in BACKENDS:
        raise ModelError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if device not in ("cpu", "cuda"):
        raise ModelError(f"--device must be cpu or cuda, got {device!r}")
    source = find_model(name)
    if backend == "onnx" or source.kind == "onnx":
        from asr_app.onnx.runtime import load_onnx_model

        return load_onnx_model(onnx_model_dir(name, quantize, on_progress=on_progress), device, threads, name=name)
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda: no CUDA GPU is visible to torch; use --device cpu")
    from asr_app.compression.checkpoint import is_compressed_dir, load_compressed

    source = local_source(source)
    if on_progress is not None and _needs_conversion(source):
        on_progress("converting the CTranslate2 weights", 0, 2)
    location = str(converted_dir(source)) if source.kind == "ct2" else source.location
    if on_progress is not None:
        on_progress("loading the PyTorch model", 1, 2)
    try:
        block = None
        if is_compressed_dir(location):  # a model written by `asr-app adapt`
            model, block = load_compressed(location)
        else:
            model = WhisperForConditionalGeneration.from_pretrained(location, dtype=torch.float32)
        tokenizer = WhisperTokenizer.from_pretrained(location)
        feature_extractor = WhisperFeatureExtractor.from_pretrained(location)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load model {name!r} from {location}: {e}") from None
    special = special_tokens_of(tokenizer)
    model.eval().to(device)
    return WhisperBundle(
        name,
        model,
        tokenizer,
        feature_extractor,
        special,
        device,
        location,
        language_of_block(block),
        multilingual=multilingual_of_block(block),
    )
