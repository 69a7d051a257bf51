"""ONNX: export a Whisper model as two graphs, and run exported models on onnxruntime.

* `export` (`export_model`, `build_encoder`, `build_decoder`): the graph walk and its
  `GraphBuilder`; `asr-app export` and the first use of `--backend onnx` call it.
* `emitters` (`register_emitter`, `emitter_for`): which function writes each layer type;
  compression methods add theirs (`onnx_emitters()`, e.g. compression/adaptwin/onnx.py).
* `runtime` (`load_onnx_model`, `OnnxWhisperBundle`, `OnnxRunner`, `is_onnx_dir`): the
  onnxruntime backend, which imports neither torch nor transformers.
"""

from asr_app.onnx.emitters import Emitter, emitter_for, register_emitter
from asr_app.onnx.export import (
    EXPORT_STEPS,
    FORMAT,
    FORMAT_VERSION,
    KEEP_FLOAT,
    OPSET,
    QUANTIZE_CHOICES,
    ExportError,
    build_decoder,
    build_encoder,
    decoder_head_dim,
    export_model,
    make_model,
)
from asr_app.onnx.graph import GraphBuilder, quantize_columns
from asr_app.onnx.runtime import (
    NumpyLogMel,
    OnnxRunner,
    OnnxTokenizer,
    OnnxWhisperBundle,
    is_onnx_dir,
    load_onnx_model,
    providers,
    session_options,
)

__all__ = [
    "Emitter",
    "emitter_for",
    "register_emitter",
    "EXPORT_STEPS",
    "FORMAT",
    "FORMAT_VERSION",
    "KEEP_FLOAT",
    "OPSET",
    "QUANTIZE_CHOICES",
    "ExportError",
    "GraphBuilder",
    "build_decoder",
    "build_encoder",
    "decoder_head_dim",
    "export_model",
    "make_model",
    "quantize_columns",
    "NumpyLogMel",
    "OnnxRunner",
    "OnnxTokenizer",
    "OnnxWhisperBundle",
    "is_onnx_dir",
    "load_onnx_model",
    "providers",
    "session_options",
]
