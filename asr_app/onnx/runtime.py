"""The onnxruntime backend: runs a folder written by `asr-app export` without torch.

* `load_onnx_model(folder)` -> `OnnxWhisperBundle` (tokenizer from tokenizer.json via the
  `tokenizers` library, log-mel in numpy with the exported filter bank, two sessions).
* `OnnxRunner` drives encoder.onnx once per window and decoder.onnx one token at a time
  with its KV cache; `asr_app.decoding.WindowDecoder` uses it exactly like the torch one.
* `session_options` / `providers` are the one place where threads, graph optimization and
  execution providers are chosen: CUDA when onnxruntime-gpu sees a GPU, CPU otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from asr_app.errors import ModelError, install_hint
from asr_app.models.bundle import MULTILINGUAL_VOCAB_SIZE, language_of_block, multilingual_of_block

if TYPE_CHECKING:
    from asr_app.models.convert import SpecialTokens

N_FFT = 400
HOP = 160
EXPORT_FORMAT = "asr-app-onnx"


def is_onnx_dir(path: str | Path) -> bool:
    """True when `path` is a folder written by `asr-app export`."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("format") == EXPORT_FORMAT
    except (OSError, ValueError):
        return False


class NumpyLogMel:
    """Whisper's log-mel spectrogram in numpy (no torch, no transformers).

    Hann window of 400 samples (periodic), hop 160, centred frames with reflect padding,
    power spectrum, the model's own mel filter bank (saved at export), log10 with a floor
    of 1e-10, the last frame dropped, clamped to (max - 8) and scaled as (x + 4) / 4.
    Source: openai-whisper `log_mel_spectrogram`; transformers `WhisperFeatureExtractor`.

    Args:
        mel_filters: (n_fft // 2 + 1, n_mels) float32.
    """

    def __init__(self, mel_filters: np.ndarray):
        self.mel_filters = np.asarray(mel_filters, np.float32)
        n = np.arange(N_FFT)
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)).astype(np.float32)

    def log_mel(self, audio: np.ndarray) -> np.ndarray:
        """(samples,) float32 16 kHz -> (n_mels, samples // 160) float32."""
        x = np.pad(np.asarray(audio, np.float32), N_FFT // 2, mode="reflect")
        n_frames = 1 + (len(x) - N_FFT) // HOP
        frames = np.lib.stride_tricks.as_strided(x, (n_frames, N_FFT), (x.strides[0] * HOP, x.strides[0]))
        power = np.abs(np.fft.rfft(frames * self.window, axis=-1)) ** 2  # (frames, n_fft/2+1)
        mel = power.astype(np.float32) @ self.mel_filters
        log_spec = np.log10(np.maximum(mel, 1e-10)).T[:, :-1]
        log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
        return ((log_spec + 4.0) / 4.0).astype(np.float32)


class OnnxTokenizer:
    """The few WhisperTokenizer methods decoding uses, on a `tokenizers.Tokenizer`."""

    unk_token_id = None

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))
        self.added = [{"content": t.content, "id": i} for i, t in self._tok.get_added_tokens_decoder().items()]

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return self._tok.token_to_id(token)


def providers(device: str = "cpu") -> list[str]:
    """Execution providers for `device`: CUDA (then CPU) when asked and available.

    Raises:
        ModelError: device "cuda" but onnxruntime has no CUDA provider (install the `gpu` extra).
    """
    import onnxruntime as ort

    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ModelError(
                "--device cuda with the onnx backend needs onnxruntime-gpu and a GPU "
                f"({install_hint('gpu')}); use --device cpu"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session_options(threads: int | None = None):
    """onnxruntime SessionOptions: all graph optimizations, `threads` intra-op threads
    (None: onnxruntime's default, one per core), sequential execution, no CPU arena."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # no memory arena: shapes change every decoding step and window, and the arena kept its
    # high-water mark for good (tiny.en int8 on jfk.wav: peak 297 -> 235 MB, same speed)
    opts.enable_cpu_mem_arena = False
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


@dataclass
class _GenerationConfig:
    suppress_tokens: list[int]


@dataclass
class _Config:
    vocab_size: int
    num_mel_bins: int


class _ModelInfo:
    """What decoding reads from `bundle.model` (config, generation_config), without torch."""

    def __init__(self, cfg: dict):
        self.config = _Config(cfg["vocab_size"], cfg["num_mel_bins"])
        self.generation_config = _GenerationConfig(list(cfg.get("suppress_tokens", [])))


@dataclass
class OnnxWhisperBundle:
    """An exported model loaded in onnxruntime: an `asr_app.models.Bundle` for decoding.

    Attributes:
        name, path, device: as `asr_app.models.WhisperBundle`.
        model: config and generation settings only (no weights: those are in the sessions).
        tokenizer: `OnnxTokenizer`; feature_extractor: `NumpyLogMel`; special: SpecialTokens.
        encoder, decoder: onnxruntime InferenceSessions.
        config: the export's config.json.
        backend: always "onnx" (`asr_app.decoding.make_runner` builds an `OnnxRunner`).
    """

    name: str
    path: str
    device: str
    model: _ModelInfo
    tokenizer: OnnxTokenizer
    feature_extractor: NumpyLogMel
    special: SpecialTokens
    encoder: Any
    decoder: Any
    config: dict
    backend: str = "onnx"

    @property
    def is_multilingual(self) -> bool:
        """What the compressed model records (`multilingual_of_block`), else whether the
        vocabulary has the multilingual layout (51865+ tokens)."""
        recorded = multilingual_of_block(self.config.get("compression"))
        if recorded is not None:
            return recorded
        return self.config["vocab_size"] >= MULTILINGUAL_VOCAB_SIZE

    @property
    def n_mels(self) -> int:
        return self.config["num_mel_bins"]

    @property
    def adapted_language(self) -> str | None:
        """Language an `asr-app adapt` model was trained to decode in; None for other models."""
        return language_of_block(self.config.get("compression"))


def load_onnx_model(
    folder: str | Path, device: str = "cpu", threads: int | None = None, name: str | None = None
) -> OnnxWhisperBundle:
    """Load a folder written by `asr-app export`.

    Args:
        folder: the export folder; device: "cpu" or "cuda" (CUDA execution provider);
        threads: intra-op threads (None: onnxruntime's default); name: shown in reports.
    Returns:
        An `OnnxWhisperBundle` for `asr_app.decoding.WindowDecoder` and `Transcriber`.
    Raises:
        ModelError: not an export folder, a newer format, missing or corrupt files, or a
            CUDA provider that cannot start.
    """
    import onnxruntime as ort

    from asr_app.models.convert import SpecialTokens

    folder = Path(folder)
    if not is_onnx_dir(folder):
        raise ModelError(f"{folder} is not an ONNX model folder: write one with `asr-app export`")
    cfg = json.loads((folder / "config.json").read_text())
    if cfg.get("format_version", 1) > 1:
        raise ModelError(f"{folder} was written by a newer asr-app (format {cfg['format_version']}): upgrade asr-app")
    try:
        tok = OnnxTokenizer(folder / "tokenizer.json")
        fe = NumpyLogMel(np.load(folder / "mel_filters.npy"))
        opts, prov = session_options(threads), providers(device)
        enc = ort.InferenceSession(str(folder / "encoder.onnx"), opts, providers=prov)
        dec = ort.InferenceSession(str(folder / "decoder.onnx"), opts, providers=prov)
    except ModelError:
        raise
    except Exception as e:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...) for bad files
        raise ModelError(f"cannot load ONNX model from {folder}: {e}; export it again with `asr-app export`") from None
    if device == "cuda" and "CUDAExecutionProvider" not in enc.get_providers():
        # onnxruntime-gpu lists the CUDA provider even when CUDA or cuDNN libraries are
        # missing, then silently falls back to the CPU: say so instead
        raise ModelError(
            "onnxruntime could not start its CUDA provider (CUDA or cuDNN libraries missing, see "
            "onnxruntime's CUDA requirements); use --device cpu"
        )
    special = SpecialTokens(tok.added)
    return OnnxWhisperBundle(
        name or cfg.get("name", folder.name), str(folder), device, _ModelInfo(cfg), tok, fe, special, enc, dec, cfg
    )


class OnnxRunner:
    """Encoder once per window, decoder step by step with a numpy KV cache.

    The cache is (self_k, self_v), each (layers, beams, heads, tokens, head_dim) float32;
    audio features are (cross_k, cross_v) of the same layout over the 1500 audio positions.
    """

    def __init__(self, bundle: OnnxWhisperBundle):
        self.bundle = bundle
        c = bundle.config
        self._empty = (c["decoder_layers"], c["decoder_attention_heads"], c["head_dim"])

    def encode(self, mel: np.ndarray, content_frames: int | None = None):
        """mel: (n_mels, 3000) float32 -> (cross_k, cross_v) for `step`; the exported
        encoder takes the whole window (content_frames is not used)."""
        _, cross_k, cross_v = self.bundle.encoder.run(None, {"input_features": mel[None].astype(np.float32)})
        return cross_k, cross_v

    def step(self, tokens: np.ndarray, audio_features, cache):
        """tokens (beams, new) int64 -> (logits (beams, vocab) float32, new cache)."""
        cross_k, cross_v = audio_features
        if cache is None:
            layers, heads, hd = self._empty
            empty = np.zeros((layers, tokens.shape[0], heads, 0, hd), np.float32)
            cache = (empty, empty)
        logits, k, v = self.bundle.decoder.run(
            None,
            {
                "tokens": np.asarray(tokens, np.int64),
                "self_k": cache[0],
                "self_v": cache[1],
                "cross_k": cross_k,
                "cross_v": cross_v,
            },
        )
        return logits, (k, v)

    @staticmethod
    def reorder(cache, beam_idx: np.ndarray):
        """Reorder (or expand) the cache's beams: beam_idx (beams,) int."""
        return cache[0][:, beam_idx], cache[1][:, beam_idx]

    @staticmethod
    def expand_features(audio_features, beams: int):
        """The same audio features for `beams` beams."""
        return tuple(np.repeat(a, beams, axis=1) for a in audio_features)
