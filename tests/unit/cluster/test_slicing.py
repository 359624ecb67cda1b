"""A layer larger than a device, cut by output columns: every slice on its own device, concatenated, answers as the whole.

Tiny graphs (a few hundred weights) and a device of a few hundred bytes, so that one layer really is
split: Gemm with transB 0 and 1, MatMul, Conv, an int8 QDQ Gemm (per-channel weights and bias), a
block floating point MatMul, and a plan in which one layer of three exceeds the device.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.utils
import pytest
from onnx import TensorProto, helper, numpy_helper

from fpgaflow.fpga_runtime.errors import ResourceExhausted
from fpgaflow.fpga_runtime.ort import make_session
from fpgaflow.fpga_runtime.placement.cost import graph_cost
from fpgaflow.fpga_runtime.placement.slicing import even_bounds
from fpgaflow.fpga_runtime.placement.split import extract_parts, plan_split, run_parts
from tests.fixtures.tiny_service import checked_model

K, N = 16, 12
BATCH = 4


def dense_model(op: str, trans_b: int = 0, bias: bool = True, activation: str = "Relu") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weight_shape = (N, K) if trans_b else (K, N)
    initializers = [numpy_helper.from_array(rng.normal(0, 0.3, weight_shape).astype(np.float32), "w")]
    inputs = ["x", "w"]
    if bias:
        initializers.append(numpy_helper.from_array(rng.normal(0, 0.1, N).astype(np.float32), "b"))
    if op == "Gemm":
        layer = helper.make_node("Gemm", [*inputs, *(["b"] if bias else [])], ["dense"], name="dense", transB=trans_b)
        nodes = [layer]
    else:
        nodes = [helper.make_node("MatMul", inputs, ["dense"], name="dense")]
        if bias:
            nodes.append(helper.make_node("Add", ["dense", "b"], ["biased"], name="bias"))
    last = nodes[-1].output[0]
    nodes.append(helper.make_node(activation, [last], ["y"], name="activation"))
    graph = helper.make_graph(
        nodes,
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", N])],
        initializer=initializers,
    )
    return checked_model(graph)


def conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["y"], name="relu"),
        ],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10, 6, 6])],
        initializer=[
            numpy_helper.from_array(rng.normal(0, 0.3, (10, 3, 3, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.normal(0, 0.1, 10).astype(np.float32), "b"),
        ],
    )
    return checked_model(graph)


def split_and_run(model: onnx.ModelProto, numeric_format: str, capacity: int, tmp_path, batch: np.ndarray):
    """The plan, the whole graph's output and its chained (sliced) parts' output on ``batch``."""
    path = tmp_path / "whole.onnx"
    onnx.save(model, path)
    plan = plan_split(model, numeric_format, capacity)
    files = extract_parts(model, plan, tmp_path, "layer")
    (output,) = [value.name for value in model.graph.output]
    (input_name,) = [value.name for value in model.graph.input if value.name not in {t.name for t in model.graph.initializer}]
    whole = make_session(path).run([output], {input_name: batch})[0]
    chained = run_parts(plan, files, {input_name: batch})[output]
    return plan, files, whole, chained


def features(rng_seed: int = 2, shape=(BATCH, K)) -> np.ndarray:
    return np.random.default_rng(rng_seed).normal(0, 1, shape).astype(np.float32)


@pytest.mark.parametrize(
    ("op", "trans_b", "bias"),
    [("Gemm", 0, True), ("Gemm", 1, True), ("Gemm", 0, False), ("MatMul", 0, True), ("MatMul", 0, False)],
)
def test_fp32_dense_layer_sliced_by_columns_answers_as_the_whole(op, trans_b, bias, tmp_path):
    model = dense_model(op, trans_b, bias)
    weight_bytes = graph_cost(model, "fp32").weight_bytes
    plan, files, whole, chained = split_and_run(model, "fp32", weight_bytes // 3 + 64, tmp_path, features())
    (part,) = plan.parts_in_order
    assert part.sliced is not None and part.sliced.layer == "dense" and part.sliced.axis == 1
    assert plan.devices == part.sliced.slices == len(files[0]) == 3
    assert part.sliced.bounds == (0, 4, 8, 12)
    for path, device_bytes in zip(files[0], part.device_weight_bytes):
        assert graph_cost(onnx.load(path), "fp32").weight_bytes == device_bytes <= weight_bytes // 3 + 64
    np.testing.assert_allclose(chained, whole, rtol=0, atol=1e-6)


def test_conv_sliced_by_output_channels_answers_as_the_whole(tmp_path):
    model = conv_model()
    weight_bytes = graph_cost(model, "fp32").weight_bytes  # 10 channels x (27 weights + 1 bias) x 4 bytes
    plan, files, whole, chained = split_and_run(model, "fp32", weight_bytes // 2, tmp_path, features(3, (2, 3, 6, 6)))
    (part,) = plan.parts_in_order
    assert part.sliced is not None and part.sliced.axis == 1 and part.sliced.bounds == (0, 5, 10)
    assert [onnx.load(path).graph.output[0].type.tensor_type.shape.dim[1].dim_value for path in files[0]] == [5, 5]
    np.testing.assert_allclose(chained, whole, rtol=0, atol=1e-6)


def quantized_int8(model: onnx.ModelProto, calibration: np.ndarray, tmp_path) -> onnx.ModelProto:
    """Static QDQ int8 with per-channel weights, as the pipeline's int8 format quantises (uint8 activations)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": calibration}])

        def get_next(self):
            return next(self.batches, None)

    source, quantized = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    onnx.save(model, source)
    quantize_static(
        source,
        quantized,
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return onnx.load(quantized)


def test_int8_qdq_gemm_slices_its_per_channel_weights_scales_and_bias(tmp_path):
    model = quantized_int8(dense_model("Gemm", trans_b=1), features(4, (32, K)), tmp_path)
    weight_dequantisers = [node for node in model.graph.node if node.op_type == "DequantizeLinear" and "w_scale" in node.input]
    assert weight_dequantisers, "the fixture must quantise the weights per output channel"
    weight_bytes = graph_cost(model, "int8").weight_bytes
    batch = features(5, (16, K))
    plan, files, _whole, chained = split_and_run(model, "int8", weight_bytes // 2, tmp_path, batch)
    quantiser, layer = plan.parts_in_order  # the input's QuantizeLinear/DequantizeLinear, then the Gemm and its output's
    assert quantiser.sliced is None and layer.sliced is not None and layer.sliced.slices == 2
    per_slice = [{tensor.name: tuple(tensor.dims) for tensor in onnx.load(path).graph.initializer} for path in files[1]]
    for shapes in per_slice:
        assert shapes["w_quantized"] == (6, K) and shapes["w_scale"] == shapes["b_quantized"] == (6,)
        assert shapes["y_scale"] == ()  # one scale for the whole output stays whole
    # The whole layer, unsliced, on the same input: what the slices must give, value for value.
    onnx.utils.extract_model(str(tmp_path / "whole.onnx"), str(tmp_path / "layer.onnx"), [layer.input], [layer.output])
    layer_input = run_parts(plan, files[:1], {"x": batch})[layer.input]
    whole_layer = make_session(tmp_path / "layer.onnx").run(None, {layer.input: layer_input})[0]
    np.testing.assert_array_equal(chained, whole_layer)
    # And the whole graph with onnxruntime's QDQ semantics (its fused integer kernels may round otherwise on AVX2).
    unfused = unfused_session(tmp_path / "whole.onnx").run(None, {"x": batch})[0]
    np.testing.assert_array_equal(chained, unfused)
    assert list(chained.argmax(axis=1)) == list(unfused.argmax(axis=1))


def unfused_session(path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_block_float_matmul_slices_answer_bit_for_bit(tmp_path):
    from fpgaflow.tasks.numerics.formats import numerics_for, prepare_model
    from fpgaflow.tasks.settings import PipelineSettings

    numerics = numerics_for("msfp8", block_size=8, settings=PipelineSettings(home=tmp_path))
    model = prepare_model(numerics, dense_model("MatMul", bias=True), features(6, (8, K)))
    assert any(node.name.startswith("msfp8/") for node in model.graph.node)
    weight_bytes = graph_cost(model, "msfp8").weight_bytes
    plan, _files, whole, chained = split_and_run(model, "msfp8", weight_bytes // 2 + 8, tmp_path, features(7))
    assert [part.sliced is not None for part in plan.parts_in_order] == [False, True]  # the quantiser, then the layer
    np.testing.assert_array_equal(chained, whole)


def mlp() -> onnx.ModelProto:
    """16 → 8 (Relu) → 48 (Relu) → 4: the middle layer (8 x 48 fp32 = 1,536 bytes) is the one too large."""
    rng = np.random.default_rng(8)
    sizes = [(16, 8), (8, 48), (48, 4)]
    nodes, initializers, last = [], [], "x"
    for index, shape in enumerate(sizes, start=1):
        initializers.append(numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), f"w{index}"))
        nodes.append(helper.make_node("MatMul", [last, f"w{index}"], [f"mm{index}"], name=f"fc{index}"))
        last = f"mm{index}" if index == len(sizes) else f"relu{index}"
        if index < len(sizes):
            nodes.append(helper.make_node("Relu", [f"mm{index}"], [last], name=f"relu{index}"))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, ["batch", 4])],
        initializer=initializers,
    )
    return checked_model(graph)


def test_plan_cuts_only_the_layer_larger_than_the_device(tmp_path):
    plan, files, whole, chained = split_and_run(mlp(), "fp32", 800, tmp_path, features(9, (3, 16)))
    first, wide, last = plan.parts_in_order
    assert (first.sliced, last.sliced) == (None, None)
    assert (first.input, first.output, wide.output, last.output) == ("x", "relu1", "relu2", "mm3")
    assert first.device_weight_bytes == (512,) and last.device_weight_bytes == (768,)
    assert wide.sliced is not None and wide.sliced.layer == "fc2" and wide.sliced.bounds == even_bounds(48, 2) == (0, 24, 48)
    assert wide.device_weight_bytes == (768, 768) and plan.devices == 4 and [len(f) for f in files] == [1, 2, 1]
    assert plan.cuts == ("relu1", "relu2")
    np.testing.assert_allclose(chained, whole, rtol=0, atol=1e-6)


def test_a_layer_one_column_of_which_does_not_fit_is_refused_naming_it():
    # fc1: 16 x 8 fp32 weights, 64 bytes per output column
    with pytest.raises(
        ResourceExhausted, match=r"between the graph input and tensor 'relu1' take 512 bytes .* one output column of layer 'fc1'"
    ):
        plan_split(mlp(), "fp32", 60)
