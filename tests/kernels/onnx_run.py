"""Run one own op (`asr_app.kernels`, domain `ownvoice.asr`) alone in stock onnxruntime."""

from __future__ import annotations

import numpy as np


def run_own_op(op_type: str, inputs: dict[str, np.ndarray], out_rank: int) -> np.ndarray:
    """The op's ONNX function as the only node of a model, run on the CPU provider.

    Args:
        op_type: one of `asr_app.kernels.OP_NAMES`.
        inputs: the op's inputs by name, in the op's order (float32 or int8 arrays).
        out_rank: the number of dimensions of the output.
    Returns:
        The op's single output.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from asr_app.kernels import DOMAIN, VERSION, function_protos

    types = {
        np.dtype(np.float32): TensorProto.FLOAT,
        np.dtype(np.int8): TensorProto.INT8,
        np.dtype(np.int64): TensorProto.INT64,
    }
    node = helper.make_node(op_type, list(inputs), ["y"], domain=DOMAIN)
    graph = helper.make_graph(
        [node],
        "one_op",
        [helper.make_tensor_value_info(n, types[v.dtype], list(v.shape)) for n, v in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"d{i}" for i in range(out_rank)])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(DOMAIN, VERSION)],
        functions=function_protos(),
    )
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model)
    options = ort.SessionOptions()  # explicit: one thread, default graph optimizations
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)[0]
