"""MACs, weights and bytes of hand-built graphs against hand computation; the latency model by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import helper

from fpgaflow.fpga_runtime.errors import InvalidInput, InvalidServiceDefinition
from fpgaflow.fpga_runtime.placement.cost import cost_report, estimate_latency, graph_cost, weight_bits_of
from fpgaflow.fpga_runtime.profiles import load_profile


def only_layer(cost):
    (layer,) = [layer for layer in cost.layers if layer.macs]
    return layer


def single_conv(graphs, input_shape, weight_shape, output_shape, **attributes):
    return graphs.make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attributes)],
        [("x", ["N", *input_shape[1:]])],
        [("y", ["N", *output_shape[1:]])],
        {"w": graphs.random(*weight_shape)},
    )


def test_conv_with_padding_counts_every_output_times_kernel_volume(graphs):
    cost = graph_cost(graphs.conv_relu_pool(channels=8, size=16), "fp32")
    conv = cost.layers[0]
    assert (conv.name, conv.op_type) == ("conv", "Conv")
    assert conv.macs == 8 * 16 * 16 * (3 * 3 * 3)
    assert conv.weight_params == 8 * 3 * 3 * 3 + 8
    assert conv.weight_bytes == (8 * 27 + 8) * 4
    assert conv.output_bytes == 8 * 16 * 16 * 4
    assert cost.macs == 55_296


def test_strided_conv(graphs):
    model = single_conv(graphs, (1, 4, 15, 15), (6, 4, 5, 5), (1, 6, 6, 6), strides=[2, 2])
    assert only_layer(graph_cost(model, "fp32")).macs == (6 * 6 * 6) * (4 * 5 * 5)


def test_grouped_conv_uses_channels_per_group(graphs):
    model = single_conv(graphs, (1, 8, 10, 10), (12, 2, 3, 3), (1, 12, 10, 10), group=4, pads=[1, 1, 1, 1])
    assert only_layer(graph_cost(model, "fp32")).macs == (12 * 10 * 10) * (2 * 3 * 3)


def test_depthwise_conv(graphs):
    model = single_conv(graphs, (1, 16, 12, 12), (16, 1, 3, 3), (1, 16, 6, 6), group=16, strides=[2, 2], pads=[1, 1, 1, 1])
    layer = only_layer(graph_cost(model, "fp32"))
    assert layer.macs == 16 * 6 * 6 * 9
    assert layer.weight_params == 16 * 9


def test_conv_transpose_counts_every_input_times_kernel_volume(graphs):
    model = graphs.make_model(
        [helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])],
        [("x", ["N", 4, 5, 5])],
        [("y", ["N", 6, 11, 11])],
        {"w": graphs.random(4, 6, 3, 3)},
    )
    assert only_layer(graph_cost(model, "fp32")).macs == (4 * 5 * 5) * (6 * 3 * 3)


def test_gemm_with_transposed_weights_and_bias(graphs):
    model = graphs.make_model(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
        [("x", ["N", 64])],
        [("y", ["N", 10])],
        {"w": graphs.random(10, 64), "b": graphs.random(10)},
    )
    layer = only_layer(graph_cost(model, "fp32"))
    assert (layer.macs, layer.weight_params) == (64 * 10, 64 * 10 + 10)


def test_gemm_with_transposed_input_takes_the_inner_size_from_the_right_axis(graphs):
    model = graphs.make_model(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transA=1)],
        [("x", [32, 2])],
        [("y", [2, 5])],
        {"w": graphs.random(32, 5)},
    )
    assert only_layer(graph_cost(model, "fp32")).macs == 2 * 5 * 32


def test_matmul_with_constant_weights_then_bias_add(graphs):
    model = graphs.make_model(
        [
            helper.make_node("MatMul", ["x", "w"], ["mm"], name="dense"),
            helper.make_node("Add", ["mm", "b"], ["y"], name="bias"),
        ],
        [("x", ["N", 7, 20])],
        [("y", ["N", 7, 9])],
        {"w": graphs.random(20, 9), "b": graphs.random(9)},
    )
    dense, bias = graph_cost(model, "fp32").layers
    assert (dense.macs, dense.weight_params, dense.vector_ops) == (7 * 9 * 20, 20 * 9, 0)
    assert (bias.macs, bias.weight_params, bias.vector_ops) == (0, 9, 7 * 9)


def test_matmul_of_two_activations_has_macs_and_no_weights(graphs):
    model = graphs.make_model(
        [helper.make_node("MatMul", ["a", "b"], ["y"])],
        [("a", ["N", 4, 6]), ("b", ["N", 6, 5])],
        [("y", ["N", 4, 5])],
        {},
    )
    layer = only_layer(graph_cost(model, "fp32"))
    assert (layer.macs, layer.weight_params) == (4 * 5 * 6, 0)


def test_pooling_and_elementwise_vector_operations(graphs):
    model = graphs.make_model(
        [
            helper.make_node("MaxPool", ["x"], ["pooled"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["pooled"], ["relu"]),
            helper.make_node("GlobalAveragePool", ["relu"], ["y"]),
        ],
        [("x", ["N", 8, 16, 16])],
        [("y", ["N", 8, 1, 1])],
        {},
    )
    pool, relu, global_pool = graph_cost(model, "fp32").layers
    assert pool.vector_ops == 8 * 8 * 8 * 9
    assert relu.vector_ops == 8 * 8 * 8
    assert global_pool.vector_ops == 8 * 8 * 8
    assert global_pool.output_bytes == 8 * 4


def test_shape_only_nodes_are_not_layers(graphs):
    model = graphs.make_model(
        [
            helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
            helper.make_node("Flatten", ["t"], ["y"]),
        ],
        [("x", ["N", 2, 2, 3])],
        [("y", ["N", 12])],
        {},
    )
    assert graph_cost(model, "fp32").layers == ()


def test_a_weight_read_by_two_layers_is_stored_once(graphs):
    model = graphs.make_model(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="first"),
            helper.make_node("MatMul", ["h", "w"], ["y"], name="second"),
        ],
        [("x", ["N", 6])],
        [("y", ["N", 6])],
        {"w": graphs.random(6, 6)},
    )
    first, second = graph_cost(model, "fp32").layers
    assert (first.weight_params, second.weight_params) == (36, 0)
    assert (first.macs, second.macs) == (36, 36)


def test_int8_weights_behind_dequantize_linear_are_weights_of_the_conv(graphs):
    weights = np.random.default_rng(0).integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    model = graphs.make_model(
        [
            helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"]),
            helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
        ],
        [("x", ["N", 3, 8, 8])],
        [("y", ["N", 4, 6, 6])],
        {"w_q": weights, "w_scale": np.array(0.01, np.float32)},
    )
    cost = graph_cost(model, "int8")
    (conv,) = cost.layers
    # a byte per value and the graph's one per-tensor scale
    assert (conv.macs, conv.weight_params, conv.weight_bytes) == (4 * 6 * 6 * 27, 4 * 27, 4 * 27 + 4)


def test_weight_bytes_of_one_conv_layer_by_hand(graphs):
    """Conv kernel [8, 3, 3, 3] + bias [8]: blocks of 16 along the 3 input channels hold 3 values each."""
    model = graphs.conv_relu_pool(channels=8)
    kernel, blocks, bias_bits = 8 * 3 * 3 * 3, 8 * 3 * 3, 8 * 32
    assert weight_bits_of("msfp8") == 1 + 2 + 5 / 16
    assert graph_cost(model, "msfp8").layers[0].weight_bytes == math.ceil((kernel * (1 + 2) + blocks * 5 + bias_bits) / 8) == 158
    assert graph_cost(model, "msfp9").weight_bytes == math.ceil((kernel * (1 + 3) + blocks * 5 + bias_bits) / 8) == 185
    assert graph_cost(model, "msfp8", block_size=1).weight_bytes == math.ceil((kernel * 3 + kernel * 5 + bias_bits) / 8)
    # int8: a byte per kernel value and a 4-byte scale per output channel; the bias stays 32-bit.
    assert graph_cost(model, "int8").weight_bytes == kernel + 8 * 4 + 8 * 4 == 280
    assert graph_cost(model, "fp32").weight_bytes == (kernel + 8) * 4
    assert graph_cost(model, "msfp8").weight_bits == pytest.approx(158 * 8 / 224)


def test_gemm_weights_are_blocked_along_k(graphs):
    """Gemm B [K=40, N=3] (transB 0): 3 columns of 40 values, 3 blocks of 16 each (16 + 16 + 8)."""
    model = graphs.make_model(
        [helper.make_node("Gemm", ["x", "w"], ["y"], name="dense")],
        [("x", ["N", 40])],
        [("y", ["N", 3])],
        {"w": graphs.random(40, 3)},
    )
    assert graph_cost(model, "msfp9").weight_bytes == math.ceil((120 * 4 + 3 * 3 * 5) / 8)
    assert graph_cost(model, "int8").weight_bytes == 120 + 3 * 4


def test_the_graph_labels_its_block_size(graphs):
    from fpgaflow.fpga_runtime.graph_format import BLOCK_SIZE_METADATA_KEY, FORMAT_METADATA_KEY

    model = graphs.conv_relu_pool(channels=8)
    helper.set_model_props(model, {FORMAT_METADATA_KEY: "msfp8", BLOCK_SIZE_METADATA_KEY: "1"})
    assert graph_cost(model, "msfp8").block_size == 1
    assert graph_cost(model, "msfp8").weight_bytes == graph_cost(model, "msfp8", block_size=1).weight_bytes
    assert graph_cost(model, "msfp9").block_size == 16  # labelled msfp8: another format keeps its default


def test_graph_inputs_and_outputs_at_batch_1(graphs):
    cost = graph_cost(graphs.conv_relu_pool(channels=8, size=16), "fp32")
    assert (cost.input_bytes, cost.output_bytes) == (3 * 16 * 16 * 4, 8 * 4)


def test_unknown_numeric_format_is_named(graphs):
    with pytest.raises(InvalidInput, match="unknown numeric format 'fp7'.*msfp8"):
        graph_cost(graphs.conv_relu_pool(), "fp7")


def test_free_dimension_beyond_the_batch_is_refused(graphs):
    model = graphs.make_model(
        [helper.make_node("Relu", ["x"], ["y"])], [("x", ["N", "height", 4])], [("y", ["N", "height", 4])], {}
    )
    with pytest.raises(InvalidServiceDefinition, match="'x' has a free dimension at position 1 \\(height\\)"):
        graph_cost(model, "fp32")


def test_unreadable_file_is_named(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(InvalidServiceDefinition, match="broken.onnx"):
        graph_cost(path, "fp32")


def test_latency_model_by_hand(graphs, tiny_profile_path):
    profile = load_profile(tiny_profile_path)  # 10 fp32 MACs and 4 vector lanes per cycle, 1 MHz, efficiency 0.5
    cost = graph_cost(graphs.conv_relu_pool(channels=8, size=16), "fp32")
    latency = estimate_latency(cost, profile)
    conv_cycles = math.ceil(math.ceil(55_296 / 10) / 0.5)
    relu_cycles = pool_cycles = math.ceil(math.ceil(8 * 16 * 16 / 4) / 0.5)
    assert latency.layer_cycles == (conv_cycles, relu_cycles, pool_cycles) == (11_060, 1_024, 1_024)
    assert latency.compute_seconds == pytest.approx(13_108 / 1e6)
    assert latency.transfer_seconds == pytest.approx((3 * 16 * 16 * 4 + 8 * 4) / 1e6)
    assert latency.seconds == pytest.approx(latency.compute_seconds + latency.transfer_seconds)


def test_narrow_format_with_more_mac_units_is_modelled_faster(graphs):
    model = graphs.conv_relu_pool(channels=32, size=32)
    profile = load_profile("stratix10")
    fp32, msfp8 = (cost_report(model, name, profile) for name in ("fp32", "msfp8"))
    assert msfp8.latency.compute_cycles < fp32.latency.compute_cycles
    assert msfp8.graph.weight_bytes < fp32.graph.weight_bytes


def test_report_refuses_a_format_the_device_lacks(graphs, tiny_profile_path):
    with pytest.raises(InvalidInput, match="does not support numeric format 'msfp9'; it supports fp32, int8, msfp8"):
        cost_report(graphs.conv_relu_pool(), "msfp9", load_profile(tiny_profile_path))


def test_report_dict_has_one_row_per_layer_and_the_totals(graphs):
    report = cost_report(graphs.conv_relu_pool(channels=8, size=16), "int8", load_profile("arria10"))
    data = report.to_dict()
    assert [row["name"] for row in data["layers"]] == ["conv", "relu", "pool"]
    assert data["totals"]["macs"] == 55_296
    assert data["totals"]["weight_bytes"] == 280
    assert data["totals"]["fits"] is True
    assert data["totals"]["modelled_seconds"] == pytest.approx(report.latency.seconds)
