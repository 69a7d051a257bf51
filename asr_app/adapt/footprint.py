"""What a model costs where it runs: the bytes of its int8 ONNX graphs on disk and the
decoder's time per token on onnxruntime (the app's default backend), for the adapt report."""

from __future__ import annotations

import time

import numpy as np

DECODER_STEPS = 40  # timed decoder steps, after the prompt
GRAPHS = ("encoder.onnx", "decoder.onnx")


def footprint(name: str, mel: np.ndarray, threads: int | None = None, steps: int = DECODER_STEPS) -> dict:
    """The int8 export of model `name` (exported on first use, as `transcribe` would) and
    its decoder's speed.

    Args:
        name: a model as `load_model` takes it (built-in name or folder).
        mel: (n_mels, 3000) float32, one log-mel window the decoder is timed on.
        threads: onnxruntime intra-op threads (None: its default).
        steps: decoder steps timed (greedy over text tokens only, so every model takes as
            many steps whatever it would transcribe).
    Returns:
        {"int8_bytes": encoder + decoder graph bytes, "decoder_ms_per_token": wall ms per
        step with the KV cache, "vocab_size": logits per step}.
    Raises:
        ModelError, ExportError: the model cannot be loaded or exported.
    """
    from asr_app.models import onnx_model_dir
    from asr_app.onnx.runtime import OnnxRunner, load_onnx_model

    folder = onnx_model_dir(name, "int8")
    size = sum((folder / g).stat().st_size for g in GRAPHS)
    bundle = load_onnx_model(folder, threads=threads)
    runner = OnnxRunner(bundle)
    features = runner.encode(mel)
    sp = bundle.special
    prompt = [sp.sot] + ([sp.languages["en"], sp.transcribe] if bundle.is_multilingual else []) + [sp.no_timestamps]
    logits, cache = runner.step(np.array([prompt], dtype=np.int64), features, None)
    t0 = time.perf_counter()
    for _ in range(steps):
        token = int(logits[0, : sp.eot].argmax())
        logits, cache = runner.step(np.array([[token]], dtype=np.int64), features, cache)
    ms = 1000 * (time.perf_counter() - t0) / steps
    return {"int8_bytes": size, "decoder_ms_per_token": round(ms, 2), "vocab_size": int(logits.shape[-1])}
