"""Which function writes each layer type into an ONNX graph: the emitter registry.

An emitter is a plain function

    emit(g, module, x, hint) -> str

g: the `asr_app.onnx.graph.GraphBuilder` of the graph being written; module: the layer;
x: the name of its input tensor in the graph, (batch, positions, d_model) float; hint: a
prefix for the names of its weights ("enc.3.attn"; `GraphBuilder.int8` reads it); it adds
the layer's nodes and initializers to g and returns the name of its output tensor.

The graph walk (`asr_app.onnx.export`) asks `emitter_for(module)` for the encoder's
self-attention and every feed-forward linear layer (fc1, fc2). Emitters come from three
places, later ones winning:
1. the stock Whisper layers, here: `nn.Linear` (MatMul or Int8MatMul) and transformers'
   `WhisperAttention` (an encoder self-attention as `BlockAttention`);
2. each compression method's `onnx_emitters()` (`asr_app.compression.methods`), e.g.
   AdaPTwin's `TwinSelfAttention` and `LowRankLinear` (compression/adaptwin/onnx.py);
3. `register_emitter(layer_type, fn)`.
A module's emitter is the one of the nearest class in its MRO, so a subclass of a
registered type uses its parent's emitter unless it has its own.

Imports neither torch nor the compression methods until an emitter is first looked up (the
onnxruntime backend imports this package and must run without torch).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Emitter = Callable[..., str]  # (g: GraphBuilder, module, x: str, hint: str) -> output name

# explicit registrations (`register_emitter`); built-in and method emitters are looked up
# afresh on each `emitter_for`, so a method registered later is seen too
_REGISTERED: dict[type, Emitter] = {}


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def emit_linear(g, module, x: str, hint: str) -> str:
    """A dense `nn.Linear` (weight (out, in), optional bias (out,)): x (..., in) -> (..., out)."""
    return g.linear(x, _np(module.weight), _np(module.bias) if module.bias is not None else None, hint)


def emit_dense_self_attention(g, attn, x: str, hint: str) -> str:
    """A Hugging Face `WhisperAttention` used as encoder self-attention (no mask, no cache):
    x (batch, audio_ctx, d_model) -> (batch, audio_ctx, d_model), the 1/sqrt(head_dim)
    scale folded into the query weights, the heads in the own `BlockAttention` op."""
    h, hd, s = attn.num_heads, attn.head_dim, float(attn.scaling)
    q = g.heads(g.linear(x, _np(attn.q_proj.weight) * s, _np(attn.q_proj.bias) * s, hint + ".q"), h, hd)
    k = g.heads(g.linear(x, _np(attn.k_proj.weight), None, hint + ".k"), h, hd)
    v = g.heads(g.linear(x, _np(attn.v_proj.weight), _np(attn.v_proj.bias), hint + ".v"), h, hd)
    out = g.merge_heads(g.own("BlockAttention", [q, k, v]))
    return g.linear(out, _np(attn.out_proj.weight), _np(attn.out_proj.bias), hint + ".o")


def _builtin_emitters() -> dict[type, Emitter]:
    from torch import nn
    from transformers.models.whisper.modeling_whisper import WhisperAttention

    return {nn.Linear: emit_linear, WhisperAttention: emit_dense_self_attention}


def _method_emitters() -> dict[type, Emitter]:
    from asr_app.compression.methods import all_methods

    emitters: dict[type, Emitter] = {}
    for method in all_methods().values():
        emitters.update(method.onnx_emitters())
    return emitters


def register_emitter(layer_type: type, fn: Emitter) -> None:
    """Write every `layer_type` module (and subclass without an emitter of its own) with `fn`
    (signature in the module docstring); replaces a built-in or method emitter of that type.

    Raises:
        TypeError: layer_type is not a class or fn is not callable.
    """
    if not isinstance(layer_type, type) or not callable(fn):
        raise TypeError(f"register_emitter needs a class and a function, got {layer_type!r} and {fn!r}")
    _REGISTERED[layer_type] = fn


def emitters() -> dict[type, Emitter]:
    """{layer type: emitter} in force now: built-in, then methods', then registered ones."""
    return {**_builtin_emitters(), **_method_emitters(), **_REGISTERED}


def emitter_for(module) -> Emitter | None:
    """The emitter of `module`'s nearest class (its MRO) that has one, or None (the caller
    raises `ExportError` naming the layer)."""
    table = emitters()
    for cls in type(module).__mro__:
        if cls in table:
            return table[cls]
    return None
