"""AdaPTwin: product-twin low-rank compression of attention (Biju, Sriram, Pilanci 2024).

The method object (`method.ADAPTWIN`, registered in `compression.methods`) and its options
(`options.AdaptwinOptions`) import no torch; the math below is imported on first use.
"""

import importlib

_LAZY = {
    "factor_encoder_attention": "apply",
    "factor_query_key": "factorize",
    "factor_value_output": "factorize",
    "factorize_product": "factorize",
    "factorize_product_whitened": "factorize",
    "product_singular_values": "factorize",
    "TwinSelfAttention": "layer",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"asr_app.compression.adaptwin.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
