"""`asr-app export`: a Whisper model (original or AdaPTwin-compressed) as two ONNX graphs.

The graphs are written node by node from the model's weights (onnx.helper), so every
layer is exactly what we chose, with the compression layers as the project's own ops
(`asr_app.kernels`, domain `ownvoice.asr`). This module walks the model and writes the
parts every Whisper has (convolutions, embeddings, layer norms, decoder attention with its
KV cache); each encoder self-attention and feed-forward linear layer is written by the
emitter registered for its type (`asr_app.onnx.emitters`: the stock layers there, a
compression method's layers in that method's folder, e.g. compression/adaptwin/onnx.py):

encoder.onnx   input_features (B, n_mels, 3000) float32
               -> audio_features (B, 1500, D),
                  cross_k, cross_v (L_dec, B, H, 1500, head_dim): every decoder layer's
                  cross-attention keys and values, computed once per window
decoder.onnx   tokens (B, T) int64, self_k, self_v (L_dec, B, H, P, head_dim) (the KV
               cache of the P tokens already decoded; P may be 0), cross_k, cross_v
               -> logits (B, vocab) of the last position,
                  present_k, present_v (L_dec, B, H, P + T, head_dim)

Weight handling: the 1/sqrt(head_dim) attention scale is folded into the query weights;
a compressed encoder's twin attention is written as `TwinAttention` with heads of smaller
rank zero-padded; low-rank feed-forward layers as `LowRankLinear`; factored decoder
attention (`--decoder-attention-rank R`) as stock operators with head_dim R, so the KV
cache above is R wide. `quantize="int8"`
stores every linear weight as int8 per output channel (symmetric) with float32 scales and
quantizes activations per tensor at run time (`Int8MatMul`, `...Int8` ops); the two
convolutions stay float32. `quantize="fp16"` stores float16 weights and runs in float16
inside the graph (inputs and outputs stay float32): meant for GPUs.
Source: Whisper's architecture (Radford et al. 2022) as implemented by transformers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from asr_app.errors import AsrAppError
from asr_app.onnx.emitters import emitter_for
from asr_app.onnx.graph import GraphBuilder, _np

FORMAT = "asr-app-onnx"
FORMAT_VERSION = 1
OPSET = 20
QUANTIZE_CHOICES = ("none", "int8", "fp16")
KEEP_FLOAT: tuple[str, ...] = ()  # weights an int8 export leaves float32 by default


class ExportError(AsrAppError):
    """The model cannot be exported (unknown layer type, bad option, unwritable folder)."""


def decoder_head_dim(model) -> int:
    """Per-head width of every decoder attention (head_dim, or the rank of factored ones):
    one number, since the KV cache stacks all layers.

    Raises:
        ExportError: decoder attentions of different widths.
    """
    dims = {a.head_dim for layer in model.model.decoder.layers for a in (layer.self_attn, layer.encoder_attn)}
    if len(dims) != 1:
        raise ExportError(f"decoder attentions have different head widths {sorted(dims)}; the KV cache needs one")
    return dims.pop()


def _bias(linear):
    return None if linear.bias is None else _np(linear.bias)


def _emit(g: GraphBuilder, module, x: str, hint: str, where: str, role: str) -> str:
    """Write `module` with its type's emitter (`asr_app.onnx.emitters`); returns its output.

    Raises:
        ExportError: no emitter for the module's type (names `where`, e.g. "encoder layer
            3", and `role`, e.g. "attention").
    """
    emit = emitter_for(module)
    if emit is None:
        raise ExportError(
            f"{where}: cannot export {role} of type {type(module).__name__} (no ONNX emitter is "
            "registered for that type)"
        )
    return emit(g, module, x, hint)


def _feed_forward(g: GraphBuilder, x: str, layer, hint: str, where: str) -> str:
    h = g.layer_norm(x, layer.final_layer_norm, hint + ".ln2")
    h = _emit(g, layer.fc1, h, hint + ".fc1", where, "fc1")
    h = _emit(g, layer.fc2, g.gelu(h), hint + ".fc2", where, "fc2")
    return g.op("Add", [x, h])


def _to_float(g: GraphBuilder, x: str) -> str:
    """Cast a float32 graph input to the graph's compute type (no-op unless fp16)."""
    return g.op("Cast", [x], to=g.float_type) if g.quantize == "fp16" else x


def _to_output(g: GraphBuilder, x: str, name: str) -> str:
    from onnx import TensorProto

    if g.quantize == "fp16":
        return g.op("Cast", [x], [name], to=TensorProto.FLOAT)
    return g.op("Identity", [x], [name])


def _stack(g: GraphBuilder, names: list[str], out: str | None = None) -> str:
    """Stack same-shaped tensors on a new axis 0."""
    axis0 = g.const(np.array([0], np.int64), "axis")
    parts = [g.op("Unsqueeze", [n, axis0]) for n in names]
    return g.op("Concat", parts, [out] if out else 1, axis=0)


def build_encoder(model, quantize: str, keep_float: tuple[str, ...] = ()):
    """The encoder graph (see module docstring). model: WhisperForConditionalGeneration;
    keep_float: weight name prefixes left float32 in an int8 export (e.g. "enc.0.")."""
    from onnx import TensorProto, helper

    enc, dec = model.model.encoder, model.model.decoder
    cfg = model.config
    g = GraphBuilder(quantize, keep_float)
    x = _to_float(g, "input_features")
    for conv, stride, hint in ((enc.conv1, 1, "conv1"), (enc.conv2, 2, "conv2")):
        x = g.gelu(
            g.op(
                "Conv",
                [x, g.const(_np(conv.weight), hint + ".w"), g.const(_np(conv.bias), hint + ".b")],
                kernel_shape=[3],
                pads=[1, 1],
                strides=[stride],
            )
        )
    x = g.op("Transpose", [x], perm=[0, 2, 1])
    x = g.op("Add", [x, g.const(_np(enc.embed_positions.weight), "enc.pos")])
    for i, layer in enumerate(enc.layers):
        hint = f"enc.{i}"
        h = g.layer_norm(x, layer.self_attn_layer_norm, hint + ".ln1")
        h = _emit(g, layer.self_attn, h, hint + ".attn", f"encoder layer {i}", "attention")
        x = _feed_forward(g, g.op("Add", [x, h]), layer, hint, f"encoder layer {i}")
    feats = g.layer_norm(x, enc.layer_norm, "enc.ln")
    _to_output(g, feats, "audio_features")
    h, hd = cfg.decoder_attention_heads, decoder_head_dim(model)
    ks, vs = [], []
    for i, layer in enumerate(dec.layers):
        a = layer.encoder_attn
        ks.append(g.heads(g.linear(feats, _np(a.k_proj.weight), None, f"dec.{i}.xk"), h, hd))
        vs.append(g.heads(g.linear(feats, _np(a.v_proj.weight), _bias(a.v_proj), f"dec.{i}.xv"), h, hd))
    _to_output(g, _stack(g, ks), "cross_k")
    _to_output(g, _stack(g, vs), "cross_v")
    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("input_features", f32, ["batch", cfg.num_mel_bins, 3000])]
    cache = ["layers", "batch", h, "audio_ctx", hd]
    outputs = [
        helper.make_tensor_value_info("audio_features", f32, ["batch", "audio_ctx", cfg.d_model]),
        helper.make_tensor_value_info("cross_k", f32, cache),
        helper.make_tensor_value_info("cross_v", f32, cache),
    ]
    return helper.make_graph(g.nodes, "whisper_encoder", inputs, outputs, g.inits)


def build_decoder(model, quantize: str, keep_float: tuple[str, ...] = ()):
    """The decoder graph with its KV cache (see module docstring); keep_float as
    `build_encoder` ("embed" for the token embedding and output projection)."""
    from onnx import TensorProto, helper

    dec = model.model.decoder
    cfg = model.config
    g = GraphBuilder(quantize, keep_float)
    h, hd = cfg.decoder_attention_heads, decoder_head_dim(model)
    emb = _np(dec.embed_tokens.weight)  # (vocab, D), tied with the output projection
    int8_embed = g.int8("embed")
    if int8_embed:
        # one int8 (D, vocab) table, scale per vocabulary entry, serves both the output
        # projection and the lookup (its columns)
        eq_name, es_name = g.int8_weight(np.ascontiguousarray(emb.T), "embed.q")
        cols = g.op("Gather", [eq_name, "tokens"], axis=1)  # (D, B, T)
        rows = g.op("Transpose", [cols], perm=[1, 2, 0])
        scale = g.op("Gather", [es_name, "tokens"], axis=0)
        x = g.op(
            "Mul",
            [
                g.op("Cast", [rows], to=g.float_type),
                g.op("Unsqueeze", [scale, g.const(np.array([-1], np.int64), "axis")]),
            ],
        )
    else:
        table = g.const(emb, "embed")
        x = g.op("Gather", [table, "tokens"], axis=0)
    # positions P .. P+T-1, P read from the cache's length
    self_k, self_v = _to_float(g, "self_k"), _to_float(g, "self_v")
    past = g.op("Gather", [g.op("Shape", [self_k]), g.const(np.array(3, np.int64), "i")], axis=0)
    new = g.op("Gather", [g.op("Shape", ["tokens"]), g.const(np.array(1, np.int64), "i")], axis=0)
    total = g.op("Add", [past, new])
    one = g.const(np.array(1, np.int64), "one")
    positions = g.op("Range", [past, total, one])
    x = g.op("Add", [x, g.op("Gather", [g.const(_np(dec.embed_positions.weight), "dec.pos"), positions], axis=0)])
    # causal mask (T, P+T): query i (at P+i) sees keys 0..P+i
    zero = g.const(np.array(0, np.int64), "zero")
    rows = g.op("Unsqueeze", [positions, g.const(np.array([1], np.int64), "axis")])
    cols = g.op("Unsqueeze", [g.op("Range", [zero, total, one]), g.const(np.array([0], np.int64), "axis")])
    mask = g.op(
        "Where",
        [
            g.op("Greater", [cols, rows]),
            g.const(np.array(-np.inf, np.float32), "neg_inf"),
            g.const(np.array(0.0, np.float32), "zero_f"),
        ],
    )
    cross_k, cross_v = _to_float(g, "cross_k"), _to_float(g, "cross_v")
    present_k, present_v = [], []
    for i, layer in enumerate(dec.layers):
        hint = f"dec.{i}"
        idx = g.const(np.array(i, np.int64), "layer")
        a = layer.self_attn
        s = float(a.scaling)
        hs = g.layer_norm(x, layer.self_attn_layer_norm, hint + ".ln1")
        q = g.heads(g.linear(hs, _np(a.q_proj.weight) * s, _np(a.q_proj.bias) * s, hint + ".q"), h, hd)
        k = g.heads(g.linear(hs, _np(a.k_proj.weight), None, hint + ".k"), h, hd)
        v = g.heads(g.linear(hs, _np(a.v_proj.weight), _bias(a.v_proj), hint + ".v"), h, hd)
        k = g.op("Concat", [g.op("Gather", [self_k, idx], axis=0), k], axis=2)
        v = g.op("Concat", [g.op("Gather", [self_v, idx], axis=0), v], axis=2)
        present_k.append(k)
        present_v.append(v)
        out = g.merge_heads(g.attention(q, k, v, mask))
        x = g.op("Add", [x, g.linear(out, _np(a.out_proj.weight), _np(a.out_proj.bias), hint + ".o")])
        a = layer.encoder_attn
        s = float(a.scaling)
        hs = g.layer_norm(x, layer.encoder_attn_layer_norm, hint + ".lnx")
        q = g.heads(g.linear(hs, _np(a.q_proj.weight) * s, _np(a.q_proj.bias) * s, hint + ".xq"), h, hd)
        out = g.merge_heads(
            g.attention(q, g.op("Gather", [cross_k, idx], axis=0), g.op("Gather", [cross_v, idx], axis=0))
        )
        x = g.op("Add", [x, g.linear(out, _np(a.out_proj.weight), _np(a.out_proj.bias), hint + ".xo")])
        x = _feed_forward(g, x, layer, hint, f"decoder layer {i}")
    x = g.layer_norm(x, dec.layer_norm, "dec.ln")
    last = g.op("Gather", [x, g.const(np.array(-1, np.int64), "last")], axis=1)  # (B, D)
    if int8_embed:
        logits = g.own("Int8MatMul", [last, eq_name, es_name])
    else:
        logits = g.op("Gemm", [last, table], transB=1)
    _to_output(g, logits, "logits")
    _to_output(g, _stack(g, present_k), "present_k")
    _to_output(g, _stack(g, present_v), "present_v")
    f32 = TensorProto.FLOAT
    past_shape = ["layers", "batch", h, "past", hd]
    cross_shape = ["layers", "batch", h, "audio_ctx", hd]
    inputs = [
        helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "new"]),
        helper.make_tensor_value_info("self_k", f32, past_shape),
        helper.make_tensor_value_info("self_v", f32, past_shape),
        helper.make_tensor_value_info("cross_k", f32, cross_shape),
        helper.make_tensor_value_info("cross_v", f32, cross_shape),
    ]
    total_shape = ["layers", "batch", h, "total", hd]
    outputs = [
        helper.make_tensor_value_info("logits", f32, ["batch", cfg.vocab_size]),
        helper.make_tensor_value_info("present_k", f32, total_shape),
        helper.make_tensor_value_info("present_v", f32, total_shape),
    ]
    return helper.make_graph(g.nodes, "whisper_decoder", inputs, outputs, g.inits)


def make_model(graph):
    """A ModelProto for `graph` with the own ops' functions attached and checked."""
    import onnx
    from onnx import helper

    from asr_app.kernels import DOMAIN, VERSION, function_protos

    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, VERSION)],
        producer_name="asr-app",
    )
    used = {n.op_type for n in graph.node if n.domain == DOMAIN}
    functions = {f.name: f for f in function_protos()}
    needed = set(used)
    for name in used:  # ops whose bodies call other own ops
        needed |= {n.op_type for n in functions[name].node if n.domain == DOMAIN}
    model.functions.extend(f for name, f in functions.items() if name in needed)
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model)
    return model


EXPORT_STEPS = ("writing encoder.onnx", "writing decoder.onnx", "writing the tokenizer and config")


def export_model(
    bundle,
    out_dir: str | Path,
    quantize: str = "none",
    overwrite: bool = False,
    source_key: str | None = None,
    keep_float: tuple[str, ...] | None = None,
    on_step=None,
) -> Path:
    """Export a loaded model to an ONNX model folder.

    Writes encoder.onnx, decoder.onnx, the tokenizer files, preprocessor_config.json,
    generation_config.json, mel_filters.npy (the log-mel filter bank, so the runtime needs
    no transformers) and config.json (format, dimensions, quantization, base model and the
    compression block of an adapted model).

    Args:
        bundle: a `WhisperBundle` (torch), original or compressed.
        out_dir: the folder to write; quantize: "none", "int8" or "fp16".
        overwrite: replace a non-empty out_dir.
        source_key: recorded in config.json, so a later run can tell the export is current.
        keep_float: with int8, weight name prefixes left float32 (default `KEEP_FLOAT`).
        on_step: called as on_step(i, EXPORT_STEPS[i]) before each step.
    Returns:
        out_dir.
    Raises:
        ExportError: a bad quantize value, a non-empty out_dir without overwrite (or,
            with it, one that is not an earlier export), or a layer the exporter does not know.
    """
    import onnx

    if quantize not in QUANTIZE_CHOICES:
        raise ExportError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
    from asr_app.onnx.runtime import is_onnx_dir

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise ExportError(f"{out} is not empty: choose another --out folder")
        if not is_onnx_dir(out):  # only an earlier export is ever replaced, never user files
            raise ExportError(f"{out} exists and is not an ONNX export folder: choose a new or empty --out folder")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model = bundle.model
    keep_float = KEEP_FLOAT if keep_float is None else tuple(keep_float)
    step = on_step or (lambda i, what: None)
    for i, (name, build) in enumerate((("encoder", build_encoder), ("decoder", build_decoder))):
        step(i, EXPORT_STEPS[i])
        onnx.save_model(make_model(build(model, quantize, keep_float)), str(tmp / f"{name}.onnx"))
    step(2, EXPORT_STEPS[2])
    bundle.tokenizer.save_pretrained(str(tmp))
    bundle.feature_extractor.save_pretrained(str(tmp))
    model.generation_config.save_pretrained(str(tmp))
    np.save(tmp / "mel_filters.npy", np.asarray(bundle.feature_extractor.mel_filters, np.float32))
    cfg = model.config
    from asr_app.compression.checkpoint import compression_block, is_compressed_dir
    from asr_app.kernels import DOMAIN, VERSION

    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "quantize": quantize,
        "opset": OPSET,
        "keep_float": list(keep_float) if quantize == "int8" else [],
        "custom_domains": {DOMAIN: VERSION},
        "name": bundle.name,
        "source": str(bundle.path),
        "source_key": source_key,
        "num_mel_bins": cfg.num_mel_bins,
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "encoder_layers": cfg.encoder_layers,
        "decoder_layers": cfg.decoder_layers,
        "decoder_attention_heads": cfg.decoder_attention_heads,
        "head_dim": decoder_head_dim(model),
        "max_source_positions": cfg.max_source_positions,
        "max_target_positions": cfg.max_target_positions,
        "suppress_tokens": list(model.generation_config.suppress_tokens or []),
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
    if is_compressed_dir(bundle.path):
        config["compression"] = compression_block(bundle.path)
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    return out
