"""AdaPTwin: product-twin low-rank compression of attention (Biju, Sriram, Pilanci 2024)."""

from asr_app.compression.adaptwin.apply import factor_encoder_attention
from asr_app.compression.adaptwin.factorize import (
    factor_query_key,
    factor_value_output,
    factorize_product,
    factorize_product_whitened,
    product_singular_values,
)
from asr_app.compression.adaptwin.layer import TwinSelfAttention

__all__ = ["factorize_product", "factorize_product_whitened", "product_singular_values", "factor_query_key", "factor_value_output",
           "TwinSelfAttention", "factor_encoder_attention"]
