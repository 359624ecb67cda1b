"""The pipeline's numerics emulation costs nothing on the device: the hardware computes in the format.

Graphs prepared by fpgaflow.tasks.numerics.bfp (block floating point rounding inserted as ONNX ops) and
fpgaflow.tasks.numerics.int8 (QDQ static quantization) have the MACs and weights of the float graph.
"""

from __future__ import annotations

import numpy as np
import pytest

from fpgaflow.fpga_runtime.numerics import FORMATS
from fpgaflow.fpga_runtime.placement.cost import graph_cost


@pytest.fixture
def float_model(graphs):
    return graphs.conv_relu_pool(channels=16, size=16)


@pytest.mark.parametrize("name", ["msfp8", "msfp9"])
def test_block_float_emulation_nodes_are_free(float_model, name):
    from fpgaflow.tasks.numerics.bfp import apply_block_float

    emulated = apply_block_float(float_model, FORMATS[name])
    assert len(emulated.graph.node) > len(float_model.graph.node)
    reference, cost = graph_cost(float_model, name), graph_cost(emulated, name)
    assert [layer.op_type for layer in cost.layers] == [layer.op_type for layer in reference.layers]
    assert (cost.macs, cost.vector_ops, cost.weight_params, cost.weight_bytes) == (
        reference.macs,
        reference.vector_ops,
        reference.weight_params,
        reference.weight_bytes,
    )


def test_int8_qdq_graph_has_the_float_macs_and_weights(float_model):
    from fpgaflow.tasks.numerics.int8 import quantize_int8

    calibration = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    quantized = quantize_int8(float_model, calibration)
    assert any(node.op_type == "DequantizeLinear" for node in quantized.graph.node)
    reference, cost = graph_cost(float_model, "int8"), graph_cost(quantized, "int8")
    assert (cost.macs, cost.weight_params, cost.weight_bytes) == (reference.macs, reference.weight_params, reference.weight_bytes)
