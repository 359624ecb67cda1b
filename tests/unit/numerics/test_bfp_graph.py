"""The in-graph block floating point quantizer and the graph rewrite, against the numpy reference."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from fpgaflow.fpga_runtime.numerics import NumericFormat, bfp_quantize, numeric_format
from fpgaflow.tasks.numerics.bfp import apply_block_float, block_quantizer_model, non_negative_tensors

IR_VERSION = 10  # onnxruntime 1.31 loads IR <= 13; onnx.helper defaults to a newer one


def run(model: onnx.ModelProto, **feeds) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def edge_case_tensor(shape: tuple[int, ...], axis: int, rng: np.random.Generator) -> np.ndarray:
    """Blocks of powers of two, their float32 neighbours, rounding ties, denormals, zeros and huge values."""
    scale = np.exp2(rng.integers(-30, 30, shape)).astype(np.float32)
    kind = rng.integers(0, 7, shape)
    power = np.exp2(rng.integers(-20, 20, shape)).astype(np.float32)
    values = np.select(
        [kind == 0, kind == 1, kind == 2, kind == 3, kind == 4, kind == 5],
        [
            power,
            np.nextafter(power, np.float32(0)),
            power * np.float32(1.5) + power * np.float32(0.125),
            np.float32(1e-41) * rng.integers(1, 100, shape),
            np.float32(0),
            np.float32(3e5) * rng.standard_normal(shape),
        ],
        default=rng.standard_normal(shape) * scale,
    ).astype(np.float32)
    values *= rng.choice(np.array([-1, 1], np.float32), shape)
    zero_block = [slice(None)] * len(shape)
    zero_block[axis] = slice(0, min(16, shape[axis]))
    values[(0,) * (axis) + tuple(zero_block[axis:])] = 0.0
    return values


CASES = [
    # shape, axis, block size: channels a multiple of the block, shorter than it, and with a short last block
    ((2, 32, 5, 3), 1, 16),
    ((1, 3, 9, 9), 1, 16),
    ((2, 37, 4, 4), 1, 16),
    ((6, 64), 1, 16),
    ((2, 5, 40), 2, 8),
    ((48, 7), 0, 16),
]


@pytest.mark.parametrize("name", ["msfp8", "msfp9"])
@pytest.mark.parametrize(("shape", "axis", "block_size"), CASES)
@pytest.mark.parametrize("opset", [17, 18])
def test_in_graph_quantizer_equals_reference_bit_for_bit(name, shape, axis, block_size, opset):
    fmt = numeric_format(name, block_size)
    model = block_quantizer_model(shape, axis, fmt, ir_version=IR_VERSION, opset=opset)
    rng = np.random.default_rng(abs(hash((name, shape, axis, opset))) % 2**32)
    for values in (edge_case_tensor(shape, axis, rng), rng.standard_normal(shape).astype(np.float32) * 40):
        expected = bfp_quantize(values, fmt.mantissa_bits, fmt.exponent_bits, fmt.block_size, axis=axis)
        actual = run(model, x=values)
        assert actual.dtype == np.float32 and actual.shape == values.shape
        assert np.array_equal(actual.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("name", ["msfp8", "msfp9"])
@pytest.mark.parametrize(("shape", "axis", "block_size"), CASES)
def test_non_negative_quantizer_equals_reference_bit_for_bit(name, shape, axis, block_size):
    fmt = numeric_format(name, block_size)
    model = block_quantizer_model(shape, axis, fmt, ir_version=IR_VERSION, non_negative=True)
    rng = np.random.default_rng(abs(hash((name, shape, axis))) % 2**32)
    for values in (np.abs(edge_case_tensor(shape, axis, rng)), np.abs(rng.standard_normal(shape).astype(np.float32) * 40)):
        values[(0,) * len(shape)] = np.inf
        expected = bfp_quantize(values, fmt.mantissa_bits, fmt.exponent_bits, fmt.block_size, axis=axis)
        actual = run(model, x=values)
        assert np.array_equal(actual.view(np.uint32), expected.view(np.uint32))


def every_binade_blocks(block_size: int) -> np.ndarray:
    """One block per block maximum: every power of two from 2**-20 to 2**20, its float32 neighbours, 1.5 and
    almost 2 times it; the other values of a block sit just around the rounding thresholds below it."""
    powers = np.exp2(np.arange(-20, 21)).astype(np.float32)
    maxima = np.concatenate(
        [
            powers,
            np.nextafter(powers, np.float32(0)),
            np.nextafter(powers, np.float32(np.inf)),
            powers * np.float32(1.5),
            np.nextafter(powers * np.float32(2), np.float32(0)),
        ]
    )
    fractions = np.linspace(0.0, 1.0, block_size, dtype=np.float32)
    return (maxima[:, None] * fractions[None, :]).astype(np.float32)


@pytest.mark.parametrize("non_negative", [False, True])
@pytest.mark.parametrize("name", ["msfp8", "msfp9"])
def test_shared_exponent_is_exact_next_to_every_power_of_two(name, non_negative):
    fmt = numeric_format(name, 16)
    values = every_binade_blocks(16)
    model = block_quantizer_model(values.shape, 1, fmt, ir_version=IR_VERSION, non_negative=non_negative)
    expected = bfp_quantize(values, fmt.mantissa_bits, block_size=16, axis=1)
    assert np.array_equal(run(model, x=values).view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("non_negative", [False, True])
def test_quantizer_with_unknown_spatial_size_equals_reference(non_negative):
    fmt = numeric_format("msfp9", 16)
    model = block_quantizer_model((None, 40, None, None), 1, fmt, ir_version=IR_VERSION, non_negative=non_negative)
    values = np.abs(np.random.default_rng(3).standard_normal((2, 40, 5, 7)).astype(np.float32)) * 9
    expected = bfp_quantize(values, fmt.mantissa_bits, block_size=16, axis=1)
    assert np.array_equal(run(model, x=values).view(np.uint32), expected.view(np.uint32))


def test_quantizer_refuses_formats_float32_cannot_emulate():
    wide = NumericFormat("wide", "block_float", "8-bit shared exponents", mantissa_bits=3, exponent_bits=8)
    with pytest.raises(ValueError, match="'wide'.*at most 7 shared exponent"):
        block_quantizer_model((1, 16), 1, wide)


def test_in_graph_quantizer_handles_infinities_like_the_reference():
    fmt = numeric_format("msfp8", 4)
    values = np.array([[np.inf, 1.0, -np.inf, 5e4, 2.0, 0.5, 0.0, 0.25]], np.float32)
    actual = run(block_quantizer_model((1, 8), 1, fmt, ir_version=IR_VERSION), x=values)
    assert np.array_equal(actual, bfp_quantize(values, 2, block_size=4))


@pytest.mark.parametrize("non_negative", [False, True])
def test_nan_stays_nan_and_never_turns_its_block_into_other_numbers(non_negative):
    fmt = numeric_format("msfp9", 16)
    rng = np.random.default_rng(11)
    values = rng.standard_normal((4, 64)).astype(np.float32)
    if non_negative:
        values = np.abs(values)
    values[0, 0] = values[1, 20] = values[2, 47] = np.nan  # first, middle and last position of a block
    model = block_quantizer_model((4, 64), 1, fmt, ir_version=IR_VERSION, non_negative=non_negative)
    actual = run(model, x=values)
    expected = bfp_quantize(values, fmt.mantissa_bits, block_size=16)
    assert np.all(np.isnan(actual[np.isnan(values)]))
    blocks_with_nan = np.isnan(values.reshape(4, 4, 16)).any(axis=-1)
    clean = ~np.repeat(blocks_with_nan, 16, axis=1)
    assert np.array_equal(actual[clean], expected[clean])
    unclean = ~clean & ~np.isnan(values)
    assert np.all((actual[unclean] == expected[unclean]) | np.isnan(actual[unclean]))


def _model(nodes, inputs, outputs, initializers, opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "layers", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def conv_branches_model(rng: np.random.Generator) -> onnx.ModelProto:
    """x -> Conv(w1) -> relu, which feeds two Convs (w2, w3) that are added; then a Gemm with transB."""
    w1 = rng.normal(0, 0.3, (24, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.2, (8, 24, 1, 1)).astype(np.float32)
    w3 = rng.normal(0, 0.2, (8, 24, 3, 3)).astype(np.float32)
    w4 = rng.normal(0, 0.2, (5, 8)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"]),
        helper.make_node("Conv", ["r1", "w3"], ["c3"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "c3"], ["sum"]),
        helper.make_node("GlobalAveragePool", ["sum"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w4"], ["y"], transB=1),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
        [numpy_helper.from_array(array, name) for name, array in (("w1", w1), ("w2", w2), ("w3", w3), ("w4", w4))],
    )


def test_relu_outputs_and_what_keeps_their_sign_are_known_non_negative():
    nodes = [
        helper.make_node("Relu", ["x"], ["relu"]),
        helper.make_node("Pad", ["relu", "pads"], ["zero_padded"]),
        helper.make_node("MaxPool", ["zero_padded"], ["pooled"], kernel_shape=[2, 2]),
        helper.make_node("Pad", ["relu", "pads", "minus_one"], ["minus_one_padded"]),
        helper.make_node("Neg", ["relu"], ["negated"]),
        helper.make_node("Reshape", ["negated", "flat"], ["negated_flat"]),
    ]
    graph = helper.make_graph(
        nodes,
        "signs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [],
        initializer=[
            numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
            numpy_helper.from_array(np.array(-1.0, np.float32), "minus_one"),
            numpy_helper.from_array(np.array([1, -1], np.int64), "flat"),
        ],
    )
    assert non_negative_tensors(graph) == {"relu", "zero_padded", "pooled"}


def relu_matmul_model(weights: np.ndarray) -> onnx.ModelProto:
    return _model(
        [helper.make_node("Relu", ["x"], ["relu"]), helper.make_node("MatMul", ["relu", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", weights.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", weights.shape[1]])],
        [numpy_helper.from_array(weights, "w")],
    )


def test_a_relu_output_is_rounded_without_abs_and_like_the_reference():
    rng = np.random.default_rng(8)
    weights = rng.normal(0, 1, (40, 6)).astype(np.float32)
    prepared = apply_block_float(relu_matmul_model(weights), numeric_format("msfp9", 16))
    assert "Abs" not in [node.op_type for node in prepared.graph.node]
    values = rng.normal(0, 3, (7, 40)).astype(np.float32)
    relu = np.maximum(values, 0)
    expected = bfp_quantize(relu, 3, block_size=16, axis=1) @ bfp_quantize(weights, 3, block_size=16, axis=0)
    np.testing.assert_allclose(run(prepared, x=values), expected, rtol=1e-5, atol=1e-5)


def test_weights_are_rounded_offline_along_the_input_channels():
    model = conv_branches_model(np.random.default_rng(0))
    fmt = numeric_format("msfp9", 16)
    prepared = apply_block_float(model, fmt)
    original = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    rounded = {tensor.name: numpy_helper.to_array(tensor) for tensor in prepared.graph.initializer}
    weight_axes = {"w1": 1, "w2": 1, "w3": 1, "w4": 1}  # Conv [O, I, kh, kw]: I; Gemm with transB [N, K]: K
    for node in prepared.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            weight = node.input[1]
            source = next(name for name in weight_axes if weight.startswith(f"msfp9/{name}"))
            assert np.array_equal(rounded[weight], bfp_quantize(original[source], 3, block_size=16, axis=weight_axes[source]))
    assert not set(weight_axes) & set(rounded), "the fp32 weights are dropped once no node reads them"


def test_a_shared_activation_is_quantized_once_and_every_matmul_input_is_quantized():
    prepared = apply_block_float(conv_branches_model(np.random.default_rng(0)), numeric_format("msfp8"))
    onnx.checker.check_model(prepared)
    ops = [node.op_type for node in prepared.graph.node]
    assert ops.count("ReduceMax") == 3  # x, the shared relu output, the Gemm input
    produced_by = {output: node.op_type for node in prepared.graph.node for output in node.output}
    for node in prepared.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            assert produced_by.get(node.input[0]) in ("Mul", "Reshape", "Slice")


def test_rewritten_layer_computes_on_block_floating_point_operands():
    rng = np.random.default_rng(5)
    weights = rng.normal(0, 1, (40, 6)).astype(np.float32)
    model = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6])],
        [numpy_helper.from_array(weights, "w")],
    )
    values = rng.normal(0, 3, (7, 40)).astype(np.float32)
    actual = run(apply_block_float(model, numeric_format("msfp8", 16)), x=values)
    expected = bfp_quantize(values, 2, block_size=16, axis=1) @ bfp_quantize(weights, 2, block_size=16, axis=0)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(actual, values @ weights, rtol=1e-3)


def test_refuses_what_it_cannot_emulate():
    model = conv_branches_model(np.random.default_rng(0))
    broken = onnx.ModelProto.FromString(model.SerializeToString())
    broken.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.full((24, 3, 3, 3), np.nan, np.float32), "w1"))
    with pytest.raises(ValueError, match="'w1' of Conv node .* NaN"):
        apply_block_float(broken, numeric_format("msfp9"))
    with pytest.raises(ValueError, match="not a block floating point format"):
        apply_block_float(model, numeric_format("int8"))
    old = onnx.ModelProto.FromString(model.SerializeToString())
    old.opset_import[0].version = 11
    with pytest.raises(ValueError, match="opset 11"):
        apply_block_float(old, numeric_format("msfp9"))
