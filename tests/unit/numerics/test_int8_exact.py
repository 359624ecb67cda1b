"""int8 gives the same numbers on every x86 CPU: its integer kernels compute what the QDQ graph specifies.

onnxruntime runs a QDQ graph's Conv on integer kernels that differ by CPU. With uint8 activations
and full-range int8 weights, AVX2 without VNNI multiplies with VPMADDUBSW, which adds two
255 x 127 products into a saturating 16-bit lane; VNNI accumulates in 32 bits. The default
settings (7-bit weights, ``int8_reduce_range``) keep every pair below 2**15, so the integer
arithmetic is exact everywhere and the optimized session agrees, within one output step (the
final rounding of the requantization), with the same graph run operator by operator in float.
The inputs below are the worst case: every activation at 255 and every weight at its largest code.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

from fpgaflow.tasks.numerics.formats import numerics_for

CHANNELS_IN, CHANNELS_OUT, SIDE = 64, 8, 6


def conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    weights = rng.uniform(0.5, 1.0, (CHANNELS_OUT, CHANNELS_IN, 1, 1)).astype(np.float32)
    weights[:, :, 0, 0] = weights.max(axis=1, keepdims=True)[:, :, 0, 0]  # every weight at its channel's largest code
    weights[1::2] *= -1
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["features"], name="conv")],
        "saturation_probe",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, CHANNELS_IN, SIDE, SIDE])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, CHANNELS_OUT, SIDE, SIDE])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def run(model: onnx.ModelProto, inputs: np.ndarray, optimized: bool) -> np.ndarray:
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = (
        onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized else onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": inputs})[0]


def output_step(model: onnx.ModelProto) -> float:
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    (dequantize,) = [node for node in model.graph.node if node.op_type == "DequantizeLinear" and node.output[0] == "features"]
    return float(initializers[dequantize.input[1]])


def test_default_int8_integer_kernels_agree_with_the_specified_arithmetic():
    rng = np.random.default_rng(5)
    calibration = rng.uniform(0, 4, (8, CHANNELS_IN, SIDE, SIDE)).astype(np.float32)
    calibration[0] = 4.0
    quantized = numerics_for("int8").prepare(conv_model(), calibration)
    worst_case = np.full((2, CHANNELS_IN, SIDE, SIDE), 4.0, np.float32)
    for inputs in (worst_case, calibration):
        specified, optimized = run(quantized, inputs, optimized=False), run(quantized, inputs, optimized=True)
        assert np.abs(specified).max() > 100 * output_step(quantized)
        np.testing.assert_allclose(optimized, specified, rtol=0, atol=output_step(quantized) * 1.001)
