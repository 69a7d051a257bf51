"""Plain PyTorch math of `block_attention`: the whole softmax at once.

The ONNX body splits the queries into 3 blocks only to bound memory; the math is the same
full softmax. This is exactly what `TwinSelfAttention` computed before the op existed
(`scaled_dot_product_attention` with scale 1), so PyTorch results are unchanged.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def block_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T) v: q (..., queries, r), k (..., keys, r), v (..., keys, rv) -> (..., queries, rv)."""
    return F.scaled_dot_product_attention(q, k, v, scale=1.0)
