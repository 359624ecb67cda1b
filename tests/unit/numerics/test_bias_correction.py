"""Bias correction of msfp weights: the mean error of rounded Conv weights goes back through a float bias."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from fpgaflow.fpga_runtime.numerics import numeric_format
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.numerics.bfp import apply_block_float
from fpgaflow.tasks.numerics.bias_correction import channel_means, correct_conv_biases
from fpgaflow.tasks.numerics.formats import BlockFloatNumerics, numerics_for
from tests.fixtures.settings import reload_settings

CHANNELS_IN, CHANNELS_OUT = 16, 4


def conv_model() -> onnx.ModelProto:
    weights = np.random.default_rng(0).normal(0, 1, (CHANNELS_OUT, CHANNELS_IN, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        "one_conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, CHANNELS_IN, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, CHANNELS_OUT, 8, 8])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def run(model: onnx.ModelProto, inputs: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": inputs})[0]


@pytest.fixture(scope="module")
def relu_like_inputs() -> np.ndarray:
    """Non-negative inputs with a large mean per channel, like activations after a Relu."""
    rng = np.random.default_rng(1)
    return (rng.uniform(0, 1, (12, CHANNELS_IN, 8, 8)) * rng.uniform(0.5, 3, (1, CHANNELS_IN, 1, 1))).astype(np.float32)


def test_channel_means_average_every_axis_but_the_channels(relu_like_inputs):
    (means,) = channel_means(conv_model(), ["input"], relu_like_inputs, "input", batch_size=5).values()
    np.testing.assert_allclose(means, relu_like_inputs.mean(axis=(0, 2, 3)), rtol=1e-6)


def test_the_bias_takes_back_the_mean_error_of_the_rounded_weights(relu_like_inputs):
    model = conv_model()
    rounded = apply_block_float(model, numeric_format("msfp8"))
    corrected = correct_conv_biases(model, rounded, relu_like_inputs, "input")

    (conv,) = [node for node in corrected.graph.node if node.op_type == "Conv"]
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in corrected.graph.initializer}
    weight_error = initializers[conv.input[1]].astype(np.float64) - numpy_helper.to_array(model.graph.initializer[0])
    expected_bias = -weight_error.sum(axis=(2, 3)) @ relu_like_inputs.mean(axis=(0, 2, 3), dtype=np.float64)
    np.testing.assert_allclose(initializers[conv.input[2]], expected_bias, rtol=1e-4, atol=1e-5)

    reference = run(model, relu_like_inputs)
    interior = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # away from the zero padding
    mean_error_before = np.abs((run(rounded, relu_like_inputs) - reference)[interior].mean(axis=(0, 2, 3)))
    mean_error_after = np.abs((run(corrected, relu_like_inputs) - reference)[interior].mean(axis=(0, 2, 3)))
    assert mean_error_after.max() < 0.25 * mean_error_before.max()


def test_block_float_corrects_biases_from_calibration_images_when_turned_on(monkeypatch, relu_like_inputs):
    model = conv_model()
    plain = numerics_for("msfp9")
    assert isinstance(plain, BlockFloatNumerics) and not plain.bias_correction
    assert plain.prepare(model, np.zeros((0, 8, 8, CHANNELS_IN), np.float32)) == apply_block_float(model, numeric_format("msfp9"))
    monkeypatch.setenv("FPGAFLOW_MSFP_BIAS_CORRECTION", "true")
    reload_settings()
    try:
        corrected = numerics_for("msfp9")
        assert isinstance(corrected, BlockFloatNumerics) and corrected.bias_correction
        with pytest.raises(PipelineStepError, match="FPGAFLOW_MSFP_BIAS_CORRECTION=false"):
            corrected.prepare(model, np.zeros((0, 8, 8, CHANNELS_IN), np.float32))
        assert corrected.prepare(model, relu_like_inputs) != apply_block_float(model, numeric_format("msfp9"))
    finally:
        monkeypatch.delenv("FPGAFLOW_MSFP_BIAS_CORRECTION")
        reload_settings()
