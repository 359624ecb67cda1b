"""Block floating point (ms-fp8 / ms-fp9) emulation written into an ONNX graph.

Every Conv, Gemm and MatMul computes on block floating point operands, both sides blocked along
the reduction axis (input channels for Conv, K for Gemm/MatMul), like the FPGA's dot-product
units:

* weights (initializers) are rounded once, offline, with the numpy reference
  :func:`fpgaflow.fpga_runtime.numerics.bfp_quantize`;
* activations are rounded at run time by standard ONNX ops inserted in front of the consumer
  (no custom op, so any onnxruntime executes the graph). A tensor feeding several consumers is
  quantized once.

The inserted subgraph for a tensor ``x`` blocked along ``axis`` (``C`` values long):

    xb   = Reshape(x, [0]*axis + [C/B, B, -1])            (Pad first when B does not divide C)
    m    = ReduceMax(Abs(xb), axis + 1, keepdims)          block maxima
    e0   = Clip(Floor(Log(m) / ln 2), E_min - 1, E_max + 1) estimate of floor(log2 m), within 1
    e    = e0 + Floor(Clip(m / 2**e0, 0, 2))               exact floor(log2 m) + 1
    s    = 2 ** (Clip(e, E_min + 1, E_max + 1) - mantissa_bits)   = 2 ** (E - (m - 1))
    y    = Reshape(s * Clip(Round(xb * (1/s)), -(2**m - 1), 2**m - 1), Shape(x))

``Log`` is only accurate to a few ulp, so ``Floor(Log(m)/ln 2)`` can miss by one next to a power
of two; the ``m / 2**e0`` term (exact: a division by a power of two) corrects it, which makes
the shared exponent exact. Every other step is a multiplication by a power of two or ONNX
``Round`` (half to even), so the graph reproduces the numpy reference bit for bit. A ``NaN``
stays ``NaN``; the other values of its block come out either as the reference computes them or
as ``NaN`` (onnxruntime's ReduceMax does not define NaN propagation), never as another number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fpgaflow.fpga_runtime.numerics import NumericFormat, bfp_quantize, shared_exponent_range

MIN_OPSET = 13


@dataclass(frozen=True)
class Operand:
    """Input ``index`` of a node is a block-quantized operand, blocked along ``axis``.

    Its ``axis`` is ``factor`` times the node's reduction length (a grouped Conv's data input
    spans every group; its weights one group).
    """

    index: int
    axis: int
    factor: int = 1


def _attributes(node: onnx.NodeProto) -> dict:
    return {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}


def _conv_operands(node: onnx.NodeProto) -> tuple[Operand, ...]:
    return Operand(0, 1, factor=_attributes(node).get("group", 1)), Operand(1, 1)


def _gemm_operands(node: onnx.NodeProto) -> tuple[Operand, ...]:
    attributes = _attributes(node)
    return Operand(0, 0 if attributes.get("transA", 0) else 1), Operand(1, 1 if attributes.get("transB", 0) else 0)


def _matmul_operands(node: onnx.NodeProto) -> tuple[Operand, ...]:
    return Operand(0, -1), Operand(1, -2)


# The ops whose arithmetic runs on the FPGA's block floating point dot-product units.
BLOCK_OPERANDS: dict[str, Callable[[onnx.NodeProto], tuple[Operand, ...]]] = {
    "Conv": _conv_operands,
    "Gemm": _gemm_operands,
    "MatMul": _matmul_operands,
}


def default_opset(model: onnx.ModelProto) -> int:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return opset.version
    raise ValueError("the model imports no default ONNX opset")


class _GraphEditor:
    """Creates uniquely named nodes and initializers for a graph; shared constants are made once.

    New nodes collect in ``pending`` until the caller places them with :meth:`take_pending`.
    """

    def __init__(self, graph: onnx.GraphProto, opset: int, prefix: str):
        self.graph = graph
        self.opset = opset
        self.prefix = prefix
        self.names = {tensor.name for tensor in graph.initializer} | {tensor.name for tensor in graph.input}
        self.names |= {name for node in graph.node for name in (*node.input, *node.output, node.name)}
        self.constants: dict[tuple, str] = {}
        self.pending: list[onnx.NodeProto] = []

    def unique(self, base: str) -> str:
        name, counter = f"{self.prefix}/{base}", 1
        while name in self.names:
            counter += 1
            name = f"{self.prefix}/{base}_{counter}"
        self.names.add(name)
        return name

    def constant(self, value, dtype=np.float32) -> str:
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self.constants:
            name = self.unique("const")
            self.graph.initializer.append(numpy_helper.from_array(array, name))
            self.constants[key] = name
        return self.constants[key]

    def node(self, op_type: str, inputs: list[str], base: str, **attributes) -> str:
        output = self.unique(base)
        self.pending.append(helper.make_node(op_type, inputs, [output], name=self.unique(f"{base}_{op_type}"), **attributes))
        return output

    def reduce_max(self, data: str, axis: int, base: str) -> str:
        if self.opset >= 18:
            return self.node("ReduceMax", [data, self.constant([axis], np.int64)], base, keepdims=1)
        return self.node("ReduceMax", [data], base, axes=[axis], keepdims=1)

    def take_pending(self) -> list[onnx.NodeProto]:
        nodes, self.pending = self.pending, []
        return nodes


def add_block_quantizer(editor: _GraphEditor, tensor: str, rank: int, axis: int, length: int, fmt: NumericFormat) -> str:
    """Queue in ``editor`` the nodes that round ``tensor`` to ``fmt``; return the output name."""
    e_min, e_max = shared_exponent_range(fmt.exponent_bits)
    largest_code = float(2**fmt.mantissa_bits - 1)
    block = min(fmt.block_size, length)
    padded_length = math.ceil(length / block) * block
    base = tensor.replace("/", "_")

    data = tensor
    if padded_length != length:
        pads = [0] * (2 * rank)
        pads[rank + axis] = padded_length - length
        data = editor.node("Pad", [tensor, editor.constant(pads, np.int64)], f"{base}/padded", mode="constant")
    if block == length:
        blocks, reduce_axis = data, axis
    else:
        target = [0] * axis + [padded_length // block, block, -1]
        blocks = editor.node("Reshape", [data, editor.constant(target, np.int64)], f"{base}/blocks")
        reduce_axis = axis + 1

    block_max = editor.reduce_max(editor.node("Abs", [blocks], f"{base}/abs"), reduce_axis, f"{base}/block_max")
    log2_estimate = editor.node(
        "Mul", [editor.node("Log", [block_max], f"{base}/log"), editor.constant(1 / math.log(2))], f"{base}/log2"
    )
    estimate = editor.node(
        "Clip",
        [editor.node("Floor", [log2_estimate], f"{base}/floor_log2"), editor.constant(e_min - 1), editor.constant(e_max + 1)],
        f"{base}/exponent_estimate",
    )
    ratio = editor.node(
        "Div", [block_max, editor.node("Pow", [editor.constant(2.0), estimate], f"{base}/estimate_power")], f"{base}/ratio"
    )
    correction = editor.node(
        "Floor",
        [editor.node("Clip", [ratio, editor.constant(0.0), editor.constant(2.0)], f"{base}/ratio_clipped")],
        f"{base}/correction",
    )
    exponent_plus_one = editor.node(
        "Clip",
        [
            editor.node("Add", [estimate, correction], f"{base}/exponent_raw"),
            editor.constant(e_min + 1),
            editor.constant(e_max + 1),
        ],
        f"{base}/exponent_plus_one",
    )
    step = editor.node(
        "Pow",
        [
            editor.constant(2.0),
            editor.node("Sub", [exponent_plus_one, editor.constant(float(fmt.mantissa_bits))], f"{base}/step_exponent"),
        ],
        f"{base}/step",
    )
    inverse_step = editor.node("Reciprocal", [step], f"{base}/inverse_step")

    scaled = editor.node("Mul", [blocks, inverse_step], f"{base}/scaled")
    codes = editor.node(
        "Clip",
        [editor.node("Round", [scaled], f"{base}/rounded"), editor.constant(-largest_code), editor.constant(largest_code)],
        f"{base}/codes",
    )
    quantized = editor.node("Mul", [codes, step], f"{base}/quantized")

    if block != length:
        quantized = editor.node("Reshape", [quantized, editor.node("Shape", [data], f"{base}/shape")], f"{base}/unblocked")
    if padded_length != length:
        quantized = editor.node(
            "Slice",
            [quantized, editor.constant([0], np.int64), editor.constant([length], np.int64), editor.constant([axis], np.int64)],
            f"{base}/unpadded",
        )
    return quantized


def _tensor_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    return {info.name: info.type for info in (*graph.input, *graph.value_info, *graph.output)}


def _static_shape(tensor_type: onnx.TypeProto | None) -> tuple[int | None, ...] | None:
    if tensor_type is None or not tensor_type.tensor_type.HasField("shape"):
        return None
    return tuple(dim.dim_value if dim.HasField("dim_value") else None for dim in tensor_type.tensor_type.shape.dim)


def apply_block_float(model: onnx.ModelProto, fmt: NumericFormat) -> onnx.ModelProto:
    """A copy of ``model`` computing every Conv/Gemm/MatMul in the block floating point ``fmt``."""
    if fmt.kind != "block_float":
        raise ValueError(f"format {fmt.name!r} is not a block floating point format")
    opset = default_opset(model)
    if opset < MIN_OPSET:
        raise ValueError(f"the model uses ONNX opset {opset}; block floating point emulation needs opset {MIN_OPSET} or newer")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    types = _tensor_types(model)
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    editor = _GraphEditor(graph, opset, fmt.name)
    quantized_names: dict[tuple[str, int], str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def shape_of(name: str) -> tuple[int | None, ...] | None:
        if name in initializers:
            return tuple(initializers[name].dims)
        return _static_shape(types.get(name))

    for node in graph.node:
        operands_of = BLOCK_OPERANDS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if operands_of is not None:
            operands = operands_of(node)
            shapes = []
            for operand in operands:
                shape = shape_of(node.input[operand.index])
                if shape is None:
                    raise ValueError(
                        f"{node.op_type} node {node.name!r}: the rank of input {node.input[operand.index]!r} is unknown; "
                        "run ONNX shape inference on the model first"
                    )
                shapes.append(shape)
            axes = [operand.axis % len(shape) if len(shape) > 1 else 0 for operand, shape in zip(operands, shapes)]
            reduction = _reduction_length(node, operands, shapes, axes)
            for operand, shape, axis in zip(operands, shapes, axes):
                name = node.input[operand.index]
                key = (name, axis)
                if key not in quantized_names:
                    if name in initializers:
                        quantized_names[key] = _round_initializer(editor, initializers[name], axis, fmt, node)
                    else:
                        _check_float32(types.get(name), name, node)
                        length = reduction * operand.factor
                        quantized_names[key] = add_block_quantizer(editor, name, len(shape), axis, length, fmt)
                node.input[operand.index] = quantized_names[key]
        new_nodes.extend(editor.take_pending())
        new_nodes.append(node)

    del graph.node[:]
    graph.node.extend(new_nodes)
    _drop_unused_initializers(graph)
    return model


def _reduction_length(node: onnx.NodeProto, operands: tuple[Operand, ...], shapes: list, axes: list[int]) -> int:
    """The length of the node's reduction axis (per group), from whichever operand knows it."""
    for operand, shape, axis in zip(operands, shapes, axes):
        if shape[axis]:
            return shape[axis] // operand.factor
    raise ValueError(f"{node.op_type} node {node.name!r}: the length of its reduction axis is unknown")


def _check_float32(tensor_type: onnx.TypeProto | None, name: str, node: onnx.NodeProto) -> None:
    if tensor_type is not None and tensor_type.tensor_type.elem_type not in (0, TensorProto.FLOAT):
        kind = TensorProto.DataType.Name(tensor_type.tensor_type.elem_type)
        raise ValueError(
            f"{node.op_type} node {node.name!r}: input {name!r} is {kind}; block floating point emulation runs on float32"
        )


def _round_initializer(
    editor: _GraphEditor, initializer: onnx.TensorProto, axis: int, fmt: NumericFormat, node: onnx.NodeProto
) -> str:
    weights = numpy_helper.to_array(initializer)
    if weights.dtype not in (np.float32, np.float64):
        raise ValueError(f"weight {initializer.name!r} of {node.op_type} node {node.name!r} is {weights.dtype}; expected float32")
    if not np.all(np.isfinite(weights)):
        raise ValueError(f"weight {initializer.name!r} of {node.op_type} node {node.name!r} contains NaN or infinite values")
    rounded = bfp_quantize(weights, fmt.mantissa_bits, fmt.exponent_bits, fmt.block_size, axis=axis).astype(weights.dtype)
    name = editor.unique(initializer.name.replace("/", "_"))
    editor.graph.initializer.append(numpy_helper.from_array(rounded, name))
    return name


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def block_quantizer_model(
    shape: tuple[int | None, ...], axis: int, fmt: NumericFormat, ir_version: int = 8, opset: int = 17
) -> onnx.ModelProto:
    """A model ``x -> y`` that is only the in-graph activation quantizer (for checks and tests).

    ``shape`` may hold ``None`` for free dimensions except at ``axis``.
    """
    axis = axis % len(shape)
    blocked_length = shape[axis]
    if blocked_length is None:
        raise ValueError("the blocked axis needs a known length")
    graph = helper.make_graph([], "block_quantizer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))], [])
    editor = _GraphEditor(graph, opset, fmt.name)
    output = add_block_quantizer(editor, "x", len(shape), axis, blocked_length, fmt)
    graph.node.extend(editor.take_pending())
    graph.node.append(helper.make_node("Identity", [output], ["y"], name="output"))
    graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape)))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model
