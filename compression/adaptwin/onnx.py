"""AdaPTwin's layers in an ONNX graph: emitters for `TwinSelfAttention` and `LowRankLinear`.

Each emitter is a plain function `emit(g, module, x, hint) -> str` called by the app's
graph walk (`asr_app.onnx`) through `AdaPTwin.onnx_emitters()`: g is the walk's graph
builder, passed in (this file never imports the app); its methods used here are
`const(array, hint)` (an initializer, float arrays in the graph's float type), `int8(hint)`
(whether the weights named `hint` are stored int8), `int8_weight(w, hint)` ([int8 weight,
per-column scale] initializers of w (..., K, M)) and `own(op_type, inputs)` (a node of the
project's own ops, `asr_app.kernels`, domain `ownvoice.asr`). x is the input tensor's name,
(batch, positions, d_model) float; hint prefixes the weights' names. Each returns its
output tensor's name.

The layers become the own ops `TwinAttention` / `TwinAttentionInt8` (heads of smaller rank
zero-padded to the largest) and `LowRankLinear` / `LowRankLinearInt8`; their semantics are
in kernels/README.md. Source: AdaPTwin (Biju, Sriram, Pilanci 2024).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from asr_app.compression.adaptwin.layer import LowRankLinear, TwinSelfAttention


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def twin_weights(attn: TwinSelfAttention) -> tuple[np.ndarray, ...]:
    """A `TwinSelfAttention`'s weights in the `TwinAttention` op layout.

    Returns:
        wq, wk (H, D, r_max); bq (H, 1, r_max); wv (H, D, rv_max); wo (H*rv_max, D), each
        head's block at the front of its slot and zeros after it (float32; H heads, D
        d_model, r_max / rv_max the largest query-key / value-output rank).
    """
    h, d, r, rv = attn.num_heads, attn.embed_dim, attn.max_rank, attn.max_vo_rank
    slots, vo_slots = attn.slots.cpu().numpy(), attn.vo_slots.cpu().numpy()
    out = []
    for proj in (attn.q_proj, attn.k_proj):
        full = np.zeros((h * r, d), np.float32)
        full[slots] = _np(proj.weight)
        out.append(full.reshape(h, r, d).transpose(0, 2, 1))
    bq = np.zeros(h * r, np.float32)
    bq[slots] = _np(attn.q_proj.bias)
    wv = np.zeros((h * rv, d), np.float32)
    wv[vo_slots] = _np(attn.v_proj.weight)
    wo = np.zeros((h * rv, d), np.float32)
    wo[vo_slots] = _np(attn.out_proj.weight).T
    return out[0], out[1], bq.reshape(h, 1, r), wv.reshape(h, rv, d).transpose(0, 2, 1), wo


def emit_twin_attention(g, attn: TwinSelfAttention, x: str, hint: str) -> str:
    """An encoder `TwinSelfAttention` as the own `TwinAttention` op (`TwinAttentionInt8`
    when g stores `hint`'s weights int8): x (batch, audio_ctx, d_model) -> same shape."""
    wq, wk, bq, wv, wo = twin_weights(attn)
    bq, bo = g.const(bq, hint + ".bq"), g.const(_np(attn.out_proj.bias), hint + ".bo")
    named = (("wq", wq), ("wk", wk), ("wv", wv), ("wo", wo))
    if not g.int8(hint):
        ws = [g.const(w, f"{hint}.{n}") for n, w in named]
        return g.own("TwinAttention", [x, ws[0], bq, *ws[1:], bo])
    q8, k8, v8, o8 = (g.int8_weight(w, f"{hint}.{n}") for n, w in named)
    return g.own("TwinAttentionInt8", [x, *q8, bq, *k8, *v8, *o8, bo])


def emit_low_rank(g, module: LowRankLinear, x: str, hint: str) -> str:
    """A `LowRankLinear` (down (rank, in), up (out, rank), bias (out,) or none: zeros) as the
    own `LowRankLinear` op (`LowRankLinearInt8` when int8): x (..., in) -> (..., out)."""
    down, up = _np(module.down.weight).T, _np(module.up.weight).T
    bias = g.const(
        _np(module.up.bias) if module.up.bias is not None else np.zeros(up.shape[1], np.float32), hint + ".b"
    )
    if g.int8(hint):
        return g.own(
            "LowRankLinearInt8", [x, *g.int8_weight(down, hint + ".down"), *g.int8_weight(up, hint + ".up"), bias]
        )
    return g.own("LowRankLinear", [x, g.const(down, hint + ".down"), g.const(up, hint + ".up"), bias])


EMITTERS: dict[type, Callable[..., str]] = {TwinSelfAttention: emit_twin_attention, LowRankLinear: emit_low_rank}
