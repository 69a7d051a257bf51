"""The ONNX graph builder the export's graph walk and the layers' emitters write into
(`GraphBuilder`: constants, nodes, int8 weights, the project's own ops), and the per-column
int8 weight quantization it uses."""

from __future__ import annotations

import numpy as np


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def quantize_columns(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output column: w (..., K, M) float -> (int8 (..., K, M), scale).

    scale has shape (..., 1, M) (or (M,) for 2-D w); w ~= q * scale. All-zero columns
    (padding) get scale 1 so nothing divides by zero.
    """
    absmax = np.abs(w).max(axis=-2, keepdims=True)
    scale = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, (scale.reshape(-1) if w.ndim == 2 else scale)


class GraphBuilder:
    """Accumulates the nodes and initializers of one graph; names are unique by counter.

    Emitters (`asr_app.onnx.emitters`, a method's onnx.py) receive it and use its public
    methods: `const`, `op`, `own`, `int8`, `int8_weight` and the layer helpers below.

    Args:
        quantize: "none", "int8" or "fp16" (see the module docstring).
        keep_float: weight name prefixes an int8 graph leaves float32.
    """

    def __init__(self, quantize: str, keep_float: tuple[str, ...] = ()):
        from onnx import TensorProto

        self.nodes: list = []  # onnx NodeProtos
        self.inits: list = []  # onnx TensorProtos
        self.quantize, self._n = quantize, 0
        self.keep_float = keep_float
        self.float_type = TensorProto.FLOAT16 if quantize == "fp16" else TensorProto.FLOAT
        self.float_np = np.float16 if quantize == "fp16" else np.float32

    def int8(self, hint: str) -> bool:
        """Whether the weights named `hint` are stored as int8."""
        return self.quantize == "int8" and not any(hint.startswith(k) for k in self.keep_float)

    def _name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, array, hint: str = "c") -> str:
        from onnx import numpy_helper

        array = np.asarray(array)
        if array.dtype.kind == "f":
            array = array.astype(self.float_np)
        name = self._name(hint)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs, outputs: int | list[str] = 1, domain: str = "", **attrs):
        from onnx import helper

        names = outputs if isinstance(outputs, list) else [self._name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, domain=domain, **attrs))
        return names[0] if len(names) == 1 else names

    def own(self, op_type: str, inputs) -> str:
        """A node of one of the project's own ops (`asr_app.kernels`, imported only here so
        that reading FORMAT_VERSION does not load onnxscript)."""
        from asr_app.kernels import DOMAIN

        return self.op(op_type, inputs, domain=DOMAIN)

    def int8_weight(self, w: np.ndarray, hint: str) -> list[str]:
        """[int8 weight, per-column scale] initializers of `w` (..., K, M)."""
        q, s = quantize_columns(w)
        return [self.const(q, hint), self.const(s, hint + "_s")]

    # -- layers ---------------------------------------------------------------------------
    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None, hint: str) -> str:
        """x (..., in) @ weight.T (+ bias); weight (out, in) as in torch."""
        wt = np.ascontiguousarray(weight.T)
        if self.int8(hint):
            y = self.own("Int8MatMul", [x, *self.int8_weight(wt, hint + ".wq")])
        else:
            y = self.op("MatMul", [x, self.const(wt, hint + ".w")])
        return y if bias is None else self.op("Add", [y, self.const(bias, hint + ".b")])

    def layer_norm(self, x: str, ln, hint: str) -> str:
        return self.op(
            "LayerNormalization",
            [x, self.const(_np(ln.weight), hint + ".g"), self.const(_np(ln.bias), hint + ".b")],
            axis=-1,
            epsilon=float(ln.eps),
        )

    def gelu(self, x: str) -> str:
        return self.op("Gelu", [x])  # exact (erf) GELU, as Whisper

    def heads(self, x: str, n_heads: int, head_dim: int) -> str:
        """(B, T, H*hd) -> (B, H, T, hd)."""
        y = self.op("Reshape", [x, self.const(np.array([0, 0, n_heads, head_dim], np.int64), "shape")])
        return self.op("Transpose", [y], perm=[0, 2, 1, 3])

    def merge_heads(self, x: str) -> str:
        """(B, H, T, hd) -> (B, T, H*hd)."""
        y = self.op("Transpose", [x], perm=[0, 2, 1, 3])
        return self.op("Reshape", [y, self.const(np.array([0, 0, -1], np.int64), "shape")])

    def attention(self, q: str, k: str, v: str, mask: str | None = None) -> str:
        """softmax(q k^T (+ mask)) v for (B, H, T, hd) q and (B, H, S, hd) k, v (scale folded)."""
        scores = self.op("MatMul", [q, self.op("Transpose", [k], perm=[0, 1, 3, 2])])
        if mask is not None:
            scores = self.op("Add", [scores, mask])
        return self.op("MatMul", [self.op("Softmax", [scores], axis=-1), v])
