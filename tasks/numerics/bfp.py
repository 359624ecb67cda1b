"""Block floating point (ms-fp8 / ms-fp9) emulation written into an ONNX graph.

Every Conv, Gemm and MatMul computes on block floating point operands, both sides blocked along
the reduction axis (input channels for Conv, K for Gemm/MatMul), like the FPGA's dot-product
units:

* weights (initializers) are rounded once, offline, with the numpy reference
  :func:`fpgaflow.fpga_runtime.numerics.bfp_quantize`;
* activations are rounded at run time by standard ONNX ops inserted in front of the consumer
  (no custom op, so any onnxruntime executes the graph). A tensor feeding several consumers is
  quantized once.

The inserted subgraph for a tensor ``x`` blocked along ``axis`` (``C`` values long), ``m`` mantissa
bits, ``L = 2**m - 1``:

    xb   = Reshape(x, [0]*axis + [C/B, B, ...])            (Pad first when B does not divide C)
    M    = Clip(ReduceMax(Abs(xb), axis + 1), 2**E_min, 2**E_max)      block maxima, clipped
    a    = M * (0.75 * 2**(1 - m))
    c    = a * (2**23 + 1)
    s    = c - (c - a)                                     = 2 ** (E - (m - 1)), the step
    y    = s * Clip(Round(xb * (1/s)), -L, L)              then Reshape back (and Slice off the pad)

``c - (c - a)`` is Veltkamp's splitting: it rounds ``a`` to one significant bit, to nearest. For
``M`` in ``[2**e, 2**(e+1))``, ``0.75 * M`` lies in ``[0.75, 1.5) * 2**e``, whose nearest one-bit
number is ``2**e``; so ``s`` is exactly ``2 ** (floor(log2 M) - (m - 1))`` (checked for every
float32 from ``2**-15`` to ``2**16``; scaling by powers of two keeps it exact in any binade).
Clipping ``M`` first clips the exponent: an all-zero block gets ``E_min``, an infinite maximum
``E_max``.

A tensor that cannot hold negative values (a Relu output, also through max pooling and zero
padding: :func:`non_negative_tensors`) skips ``Abs`` and rounds in float32's own addition,
two full-size passes fewer:

    y    = (Min(xb, L*s) + 2**23*s) - 2**23*s             (2**23*s from the splitting, scaled)

Adding ``2**23 * s`` to a value in ``[0, L*s]`` lands it in ``[2**23, 2**24) * s``, where
float32's spacing is exactly ``s``, so the addition rounds to a multiple of ``s``, half to even,
and the subtraction is exact. Every step is exact, so the graph reproduces the numpy reference
bit for bit (a ``-0.0`` input of the non-negative quantizer comes out ``+0.0``). A ``NaN`` stays
``NaN``; the other values of its block come out either as the reference computes them or as
``NaN`` (onnxruntime's ReduceMax does not define NaN propagation), never as another number.

The quantizer is kept to few, cheap operators because its cost decides how close the emulation
runs to fp32 (``fpgaflow bench`` targets "msfp9/msfp8 emulation speed"): onnxruntime runs each
op as a separate pass, and a reshape whose target it cannot see stops it from fusing the next
Conv with its residual Add.
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


def add_block_quantizer(
    editor: _GraphEditor,
    tensor: str,
    shape: tuple[int | None, ...],
    axis: int,
    length: int,
    fmt: NumericFormat,
    non_negative: bool = False,
) -> str:
    """Queue in ``editor`` the nodes that round ``tensor`` (of ``shape``, ``None`` for unknown dimensions) to
    ``fmt``; return the output name.

    ``non_negative`` says that ``tensor`` holds no value below zero (it comes out of a Relu):
    the quantizer then skips ``Abs`` and rounds with the shorter :func:`_round_non_negative`.
    When the dimensions after ``axis`` are known, both reshapes use constant shapes, so onnxruntime
    still knows every shape downstream (its layout optimisations fuse a Conv with its residual Add
    only when it can prove both have the same shape).
    """
    rank = len(shape)
    _check_emulated_range(fmt)
    block = min(fmt.block_size, length)
    padded_length = math.ceil(length / block) * block
    base = tensor.replace("/", "_")

    data = tensor
    if padded_length != length:
        pads = [0] * (2 * rank)
        pads[rank + axis] = padded_length - length
        data = editor.node("Pad", [tensor, editor.constant(pads, np.int64)], f"{base}/padded", mode="constant")
    trailing = shape[axis + 1 :]
    static_trailing = all(trailing)
    if block == length:
        blocks, reduce_axis = data, axis
    else:
        target = [0] * axis + [padded_length // block, block, *(trailing if static_trailing else [-1])]
        blocks = editor.node("Reshape", [data, editor.constant(target, np.int64)], f"{base}/blocks")
        reduce_axis = axis + 1

    magnitudes = blocks if non_negative else editor.node("Abs", [blocks], f"{base}/abs")
    block_max = editor.reduce_max(magnitudes, reduce_axis, f"{base}/block_max")
    round_blocks = _round_non_negative if non_negative else _round_signed
    quantized = round_blocks(editor, blocks, block_max, fmt, base)

    if block != length:
        if static_trailing:
            original = editor.constant([0] * axis + [padded_length, *trailing], np.int64)
        else:
            original = editor.node("Shape", [data], f"{base}/shape")
        quantized = editor.node("Reshape", [quantized, original], f"{base}/unblocked")
    if padded_length != length:
        quantized = editor.node(
            "Slice",
            [quantized, editor.constant([0], np.int64), editor.constant([length], np.int64), editor.constant([axis], np.int64)],
            f"{base}/unpadded",
        )
    return quantized


# Largest shared-exponent and mantissa widths whose steps, splitter products and rounding constants all
# stay normal, finite float32 numbers.
MAX_EMULATED_EXPONENT_BITS = 7
MAX_EMULATED_MANTISSA_BITS = 20
SPLITTER = float(2**23 + 1)  # Veltkamp's constant for float32: keeps the leading bit of a product
FLOAT32_FRACTION_BITS = 23  # in [2**23 * s, 2**24 * s) float32's spacing is exactly s


def _check_emulated_range(fmt: NumericFormat) -> None:
    if fmt.exponent_bits > MAX_EMULATED_EXPONENT_BITS or fmt.mantissa_bits > MAX_EMULATED_MANTISSA_BITS:
        raise ValueError(
            f"format {fmt.name!r} ({fmt.exponent_bits} exponent, {fmt.mantissa_bits} mantissa bits): the in-graph "
            f"emulation rounds activations in float32 and supports at most {MAX_EMULATED_EXPONENT_BITS} shared exponent "
            f"and {MAX_EMULATED_MANTISSA_BITS} mantissa bits"
        )


def _block_step(editor: _GraphEditor, block_max: str, fmt: NumericFormat, base: str, times_power: int = 0) -> str:
    """``2**times_power * s`` with ``s = 2 ** (E - (m - 1))`` per block from its largest magnitude, in five
    small element-wise ops."""
    e_min, e_max = shared_exponent_range(fmt.exponent_bits)
    clipped = editor.node("Clip", [block_max, editor.constant(2.0**e_min), editor.constant(2.0**e_max)], f"{base}/clipped_max")
    scaled = editor.node(
        "Mul", [clipped, editor.constant(0.75 * 2.0 ** (1 - fmt.mantissa_bits + times_power))], f"{base}/scaled_max"
    )
    split = editor.node("Mul", [scaled, editor.constant(SPLITTER)], f"{base}/split")
    excess = editor.node("Sub", [split, scaled], f"{base}/split_excess")
    return editor.node("Sub", [split, excess], f"{base}/step")


def _round_signed(editor: _GraphEditor, blocks: str, block_max: str, fmt: NumericFormat, base: str) -> str:
    """``s * Clip(Round(x * (1/s)), -L, L)``: any sign, ``-0.0`` kept."""
    largest_code = float(2**fmt.mantissa_bits - 1)
    step = _block_step(editor, block_max, fmt, base)
    inverse_step = editor.node("Reciprocal", [step], f"{base}/inverse_step")
    scaled = editor.node("Mul", [blocks, inverse_step], f"{base}/scaled")
    codes = editor.node(
        "Clip",
        [editor.node("Round", [scaled], f"{base}/rounded"), editor.constant(-largest_code), editor.constant(largest_code)],
        f"{base}/codes",
    )
    return editor.node("Mul", [codes, step], f"{base}/quantized")


def _round_non_negative(editor: _GraphEditor, blocks: str, block_max: str, fmt: NumericFormat, base: str) -> str:
    """``(Min(x, L*s) + 2**23*s) - 2**23*s``: rounds to a multiple of ``s``, half to even, in float32's own
    addition; two full-size passes fewer than :func:`_round_signed`."""
    offset = _block_step(editor, block_max, fmt, base, times_power=FLOAT32_FRACTION_BITS)
    largest_code = float(2**fmt.mantissa_bits - 1)
    ceiling = editor.node("Mul", [offset, editor.constant(largest_code * 2.0**-FLOAT32_FRACTION_BITS)], f"{base}/ceiling")
    saturated = editor.node("Min", [blocks, ceiling], f"{base}/saturated")
    shifted = editor.node("Add", [saturated, offset], f"{base}/shifted")
    return editor.node("Sub", [shifted, offset], f"{base}/quantized")


# Ops that never turn non-negative input into a negative output (their first input is the data).
_SIGN_KEEPING_OPS = frozenset(
    {
        "MaxPool",
        "GlobalMaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "Reshape",
        "Flatten",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Identity",
    }
)


def non_negative_tensors(graph: onnx.GraphProto) -> set[str]:
    """Names of the tensors no value of which can be below zero: Relu outputs and what sign-keeping ops and
    zero-padding make of them (a ``-0.0`` can come out of a Relu; it rounds to ``+0.0``)."""
    constants = {tensor.name: tensor for tensor in graph.initializer}
    found: set[str] = set()
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or not node.output:
            continue
        if node.op_type == "Relu" or (node.input and node.input[0] in found and _keeps_sign(node, constants)):
            found.add(node.output[0])
    return found


def _keeps_sign(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> bool:
    """Whether ``node`` turns non-negative data into non-negative output."""
    if node.op_type != "Pad":
        return node.op_type in _SIGN_KEEPING_OPS
    if _attributes(node).get("mode", b"constant") not in (b"constant", "constant"):
        return False
    if len(node.input) < 3 or not node.input[2]:
        return True
    value = constants.get(node.input[2])
    return value is not None and bool(np.all(numpy_helper.to_array(value) >= 0))


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
    non_negative = non_negative_tensors(graph)
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
                        quantized_names[key] = add_block_quantizer(
                            editor, name, shape, axis, length, fmt, non_negative=name in non_negative
                        )
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
    shape: tuple[int | None, ...],
    axis: int,
    fmt: NumericFormat,
    ir_version: int = 8,
    opset: int = 17,
    non_negative: bool = False,
) -> onnx.ModelProto:
    """A model ``x -> y`` that is only the in-graph activation quantizer (for checks and tests).

    ``shape`` may hold ``None`` for free dimensions except at ``axis``; ``non_negative`` builds the
    quantizer for input that is never below zero.
    """
    axis = axis % len(shape)
    blocked_length = shape[axis]
    if blocked_length is None:
        raise ValueError("the blocked axis needs a known length")
    graph = helper.make_graph([], "block_quantizer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))], [])
    editor = _GraphEditor(graph, opset, fmt.name)
    output = add_block_quantizer(editor, "x", shape, axis, blocked_length, fmt, non_negative=non_negative)
    graph.node.extend(editor.take_pending())
    graph.node.append(helper.make_node("Identity", [output], ["y"], name="output"))
    graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape)))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model
