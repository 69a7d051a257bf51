"""CALD's layer in an ONNX graph: the emitter of `HybridSelfAttention`.

Called by the app's graph walk (`asr_app.onnx`) through `Cald.onnx_emitters()` as
`emit(g, module, x, hint) -> str`, g the walk's graph builder (its `linear`, `heads`,
`merge_heads`, `const`, `op` and `own` are used; this file never imports the app). The
projections are ordinary (int8 where the graph stores int8), the Hedgehog feature map is
the own op `HedgehogFeatureMap`, ELU+1 and ReLU are standard ops, and the mixer is the own
op `HybridAttention` (kernels/README.md), whose masks the graph builds from the number of
frames, so the same graph takes a window of any length.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from asr_app.compression.cald.feature_map import EluFeatureMap, HedgehogFeatureMap, ReluFeatureMap
from asr_app.compression.cald.layer import HybridSelfAttention

WHOLE_WINDOW = 1 << 30  # the Chunk input for chunk_frames=None: one chunk over any window


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def _feature_map(g, fmap, x: str, hint: str) -> str:
    """x (B, H, T, d) -> phi(x) (B, H, T, features)."""
    if isinstance(fmap, HedgehogFeatureMap):
        return g.own(
            "HedgehogFeatureMap", [x, g.const(_np(fmap.weight), hint + ".w"), g.const(_np(fmap.bias), hint + ".b")]
        )
    scaled = g.op("Mul", [x, g.const(np.array(fmap.scale, np.float32), hint + ".scale")])
    if isinstance(fmap, EluFeatureMap):
        return g.op("Add", [g.op("Elu", [scaled]), g.const(np.array(1.0, np.float32), hint + ".one")])
    if isinstance(fmap, ReluFeatureMap):
        return g.op("Relu", [scaled])
    raise ValueError(f"no ONNX form for the feature map {type(fmap).__name__}")


def emit_hybrid_attention(g, attn: HybridSelfAttention, x: str, hint: str) -> str:
    """An encoder `HybridSelfAttention`, offline (the whole input in chunks of its
    `chunk_frames`): x (batch, frames, d_model) -> same shape.

    Raises:
        ValueError: a feature map without an ONNX form.
    """
    h, hd = attn.num_heads, attn.head_dim
    q = g.heads(g.linear(x, _np(attn.q_proj.weight), _np(attn.q_proj.bias), hint + ".q"), h, hd)
    k = g.heads(g.linear(x, _np(attn.k_proj.weight), None, hint + ".k"), h, hd)
    v = g.heads(g.linear(x, _np(attn.v_proj.weight), _np(attn.v_proj.bias), hint + ".v"), h, hd)
    phi_q = _feature_map(g, attn.feature_q, q, hint + ".phi_q")
    phi_k = _feature_map(g, attn.feature_k, k, hint + ".phi_k")
    q_scaled = g.op("Mul", [q, g.const(np.array(hd**-0.5, np.float32), hint + ".scale")])
    gamma = g.const(np.exp(_np(attn.log_gamma)).reshape(h, 1, 1), hint + ".gamma")
    chunk = WHOLE_WINDOW if attn.chunk_frames is None else attn.chunk_frames
    y = g.own(
        "HybridAttention",
        [
            q_scaled,
            k,
            v,
            phi_q,
            phi_k,
            gamma,
            g.const(np.array(chunk, np.int64), hint + ".chunk"),
            g.const(np.array(attn.window_frames, np.int64), hint + ".window"),
        ],
    )
    return g.linear(g.merge_heads(y), _np(attn.out_proj.weight), _np(attn.out_proj.bias), hint + ".o")


EMITTERS: dict[type, Callable] = {HybridSelfAttention: emit_hybrid_attention}

__all__ = ["EMITTERS", "emit_hybrid_attention"]
