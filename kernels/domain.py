"""The own ops' ONNX domain and version (imports nothing: the ONNX runtime backend reads
them without torch or onnxscript)."""

DOMAIN = "ownvoice.asr"
VERSION = 1
# the own ops' ONNX names, in the order of `asr_app.kernels.function_protos()` (callees first)
OP_NAMES = (
    "Int8MatMul",
    "BlockAttention",
    "LowRankLinear",
    "LowRankLinearInt8",
    "TwinAttention",
    "TwinAttentionInt8",
    "HybridAttention",
    "HedgehogFeatureMap",
)
