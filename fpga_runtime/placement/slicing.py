"""Splitting one layer too large for a device by its output columns: each device holds a column slice.

Model parallelism as Brainwave spread a wide layer over several FPGAs: a Gemm or MatMul (output
columns) or a Conv (output channels) whose weights exceed a device is cut into K slices of its
columns. Every slice reads the same input, holds its columns of the weights (and of the bias, of
int8 per-channel scales and zero points) and computes those columns of the output; the slices'
outputs, concatenated along the column axis, are the whole layer's output, value for value.

A sliced region is that layer followed by the nodes that treat each output column on its own
(activations, QuantizeLinear/DequantizeLinear with one scale or one per column, elementwise
arithmetic with a constant per column), so a layer's bias, activation and int8 requantisation
travel with its slice. Weights reach the layer as initializers or through constant nodes
(the DequantizeLinear of an int8 weight, a Transpose, a Cast): the slice follows them back
to the initializers it cuts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fpgaflow.fpga_runtime.errors import InvalidServiceDefinition
from fpgaflow.fpga_runtime.placement.cost import constant_tensors, weightless_copy

SLICEABLE_OPS = frozenset({"Gemm", "MatMul", "Conv"})
# Nodes that compute each element of their output from the same element of their input alone.
ELEMENTWISE_UNARY_OPS = frozenset(
    {"Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Softplus", "Gelu", "Erf"}
    | {"Identity", "Abs", "Neg", "Clip", "Cast"}
)
ELEMENTWISE_BINARY_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "PRelu"})
QUANTISE_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
# Constant nodes a weight may pass through on its way to the layer.
WEIGHT_PATH_OPS = frozenset({"DequantizeLinear", "Transpose", "Identity", "Cast"})


@dataclass(frozen=True)
class SlicedLayer:
    """A layer cut by output columns: ``columns`` outputs along ``axis`` of the region's output, in slices
    ``bounds[j]:bounds[j + 1]``."""

    layer: str
    axis: int
    columns: int
    bounds: tuple[int, ...]

    @property
    def slices(self) -> int:
        return len(self.bounds) - 1


def even_bounds(columns: int, slices: int) -> tuple[int, ...]:
    """Column boundaries of ``slices`` slices as even as ``columns`` allows (the first ones a column wider)."""
    return tuple(math.ceil(columns * index / slices) for index in range(slices + 1))


def _attribute(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def layer_output_axis(node: onnx.NodeProto, output_rank: int) -> int:
    """The axis of a sliceable layer's output that holds its columns (Gemm, MatMul) or channels (Conv)."""
    return output_rank - 1 if node.op_type == "MatMul" else 1


def _weight_operand(node: onnx.NodeProto, constants: set[str], label: str) -> tuple[str, int]:
    """(weight tensor, the weight's axis of output columns) of a sliceable layer."""
    if node.input[0] in constants or len(node.input) < 2 or node.input[1] not in constants:
        raise InvalidServiceDefinition(
            f"layer {label!r}: only a {node.op_type} of an activation by constant weights can be sliced"
        )
    if node.op_type == "Conv":
        if _attribute(node, "group", 1) != 1:
            raise InvalidServiceDefinition(f"layer {label!r} is a grouped Conv: its output channels cannot be sliced apart")
        return node.input[1], 0
    if node.op_type == "Gemm":
        if _attribute(node, "transA", 0):
            raise InvalidServiceDefinition(f"layer {label!r}: a Gemm with transA cannot be sliced")
        return node.input[1], 0 if _attribute(node, "transB", 0) else 1
    return node.input[1], -1


class _Slicer:
    """Cuts the initializers behind constant tensors of one region graph to a column range."""

    def __init__(self, graph: onnx.GraphProto, start: int, stop: int, weights: RegionWeights) -> None:
        self.graph = graph
        self.weights = weights
        self.start, self.stop = start, stop
        self.initializers = {tensor.name: tensor for tensor in graph.initializer}
        self.producers = {name: node for node in graph.node for name in node.output if name}
        self.consumers: dict[str, int] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers[name] = self.consumers.get(name, 0) + 1
        self.done: dict[str, int] = {}

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of constant ``name``, followed back through the nodes a weight may pass."""
        if name in self.initializers:
            return tuple(self.initializers[name].dims)
        node = self.producers.get(name)
        if node is not None and node.op_type == "Constant":
            return tuple(_attribute(node, "value", None).dims)
        if node is None or node.op_type not in WEIGHT_PATH_OPS:
            raise InvalidServiceDefinition(
                f"constant {name!r} is neither an initializer nor computed by a node the slicer follows"
            )
        source = self.shape(node.input[0])
        if node.op_type == "Transpose":
            return tuple(source[axis] for axis in _attribute(node, "perm", list(reversed(range(len(source))))))
        return source

    def cut(self, name: str, axis: int) -> None:
        """Keep only columns ``start:stop`` of constant ``name`` along ``axis`` (negative counts from the end)."""
        if axis < 0:
            axis += len(self.shape(name))
        if self.done.get(name, axis) != axis:
            raise InvalidServiceDefinition(f"constant {name!r} would be sliced along two different axes")
        if name in self.done:
            return
        if self.consumers.get(name, 0) > 1:
            raise InvalidServiceDefinition(
                f"constant {name!r} is shared by several nodes: slicing it for one would change the others"
            )
        self.done[name] = axis
        if name in self.initializers:
            tensor = self.initializers[name]
            sliced = np.take(self.weights.array(name), np.arange(self.start, self.stop), axis=axis)
            tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(sliced), name))
            return
        node = self.producers[name]
        if node.op_type not in WEIGHT_PATH_OPS:
            raise InvalidServiceDefinition(
                f"constant {name!r} is computed by a {node.op_type} node, which the slicer cannot follow back to its initializers"
            )
        if node.op_type == "Transpose":
            rank = len(self.shape(node.input[0]))
            self.cut(node.input[0], list(_attribute(node, "perm", list(reversed(range(rank)))))[axis])
            return
        self.cut(node.input[0], axis)
        if node.op_type == "DequantizeLinear":
            self.cut_quantisation_parameters(node, axis)

    def cut_quantisation_parameters(self, node: onnx.NodeProto, axis: int) -> None:
        """Per-axis scale and zero point along the sliced axis are cut too; one scale for all stays as it is."""
        parameters = [name for name in node.input[1:3] if name]
        if all(self.size(name) == 1 for name in parameters):
            return
        quantised_axis = _attribute(node, "axis", 1)
        if quantised_axis < 0:
            quantised_axis += len(self.shape(node.input[0]))
        if quantised_axis != axis:
            raise InvalidServiceDefinition(
                f"{node.op_type} {node.name!r} quantises per channel along axis {quantised_axis}, not the sliced axis {axis}"
            )
        for name in parameters:
            self.cut(name, 0)

    def size(self, name: str) -> int:
        return math.prod(self.shape(name))

    def cut_broadcast(self, name: str, output_rank: int, axis: int, columns: int, label: str) -> None:
        """A constant operand of an elementwise node, broadcast against the sliced output: cut where it spans the columns."""
        shape = self.shape(name)
        position = len(shape) - (output_rank - axis)
        if position < 0 or shape[position] == 1:
            return
        if shape[position] != columns:
            raise InvalidServiceDefinition(
                f"node {label!r}: constant {name!r} of shape {list(shape)} does not broadcast over the columns"
            )
        self.cut(name, position)


class RegionWeights:
    """The values of a region's initializers, each read once for all the slices cut from it."""

    def __init__(self, region: onnx.ModelProto) -> None:
        self.tensors = {tensor.name: tensor for tensor in region.graph.initializer}
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = numpy_helper.to_array(self.tensors[name])
        return self._arrays[name]


def sliced_region(region: onnx.ModelProto, start: int, stop: int, weights: RegionWeights | None = None) -> onnx.ModelProto:
    """A copy of ``region`` (one input, one output: a sliceable layer then column-wise nodes) computing only
    output columns ``start:stop``; ``weights`` shares the initializers' values between the slices of one region."""
    weights = weights or RegionWeights(region)
    sliced = weightless_copy(region)
    graph = sliced.graph
    constants = constant_tensors(graph)
    (output,) = graph.output
    rank = len(output.type.tensor_type.shape.dim)
    slicer = _Slicer(graph, start, stop, weights)
    layer_index, layer = _the_layer(graph, constants)
    axis = layer_output_axis(layer, rank)
    label = _label(layer, layer_index)
    weight, weight_axis = _weight_operand(layer, constants, label)
    columns = _output_columns(output, axis)
    slicer.cut(weight, weight_axis)
    if layer.op_type in {"Gemm", "Conv"} and len(layer.input) > 2 and layer.input[2]:
        if layer.op_type == "Conv":
            slicer.cut(layer.input[2], 0)
        else:
            slicer.cut_broadcast(layer.input[2], 2, 1, columns, label)
    for index, node in enumerate(graph.node):
        if index <= layer_index or (node.output and all(name in constants for name in node.output)):
            continue
        for name in node.input:
            if name and name in constants and _is_per_column(node, name):
                if node.op_type in QUANTISE_OPS:
                    if slicer.size(name) > 1:
                        slicer.cut(name, 0)
                else:
                    slicer.cut_broadcast(name, rank, axis, columns, _label(node, index))
    for tensor in graph.initializer:
        if tensor.name not in slicer.done:
            tensor.CopyFrom(weights.tensors[tensor.name])
    del graph.value_info[:]
    output.type.tensor_type.shape.dim[axis].Clear()
    output.type.tensor_type.shape.dim[axis].dim_value = stop - start
    return sliced


def _is_per_column(node: onnx.NodeProto, name: str) -> bool:
    """Whether constant input ``name`` of a column-wise node may span the columns (and so be sliced with them)."""
    if node.op_type in QUANTISE_OPS:
        return name in node.input[1:3]
    return node.op_type in ELEMENTWISE_BINARY_OPS


def _the_layer(graph: onnx.GraphProto, constants: set[str]) -> tuple[int, onnx.NodeProto]:
    layers = [
        (index, node)
        for index, node in enumerate(graph.node)
        if node.op_type in SLICEABLE_OPS and not all(name in constants for name in node.output)
    ]
    if len(layers) != 1:
        raise InvalidServiceDefinition(f"a sliced region holds exactly one Gemm, MatMul or Conv, this one {len(layers)}")
    return layers[0]


def _output_columns(output: onnx.ValueInfoProto, axis: int) -> int:
    dim = output.type.tensor_type.shape.dim[axis]
    if not dim.HasField("dim_value") or dim.dim_value < 1:
        raise InvalidServiceDefinition(f"output {output.name!r} has no fixed size along its column axis {axis}")
    return dim.dim_value


def column_wise(node: onnx.NodeProto, constants: set[str], sliced: set[str]) -> bool:
    """Whether ``node`` computes each output column from the same column of the sliced tensors alone."""
    activations = [name for name in node.input if name and name not in constants]
    if not activations or not all(name in sliced for name in activations):
        return False
    if node.op_type in ELEMENTWISE_UNARY_OPS or node.op_type in QUANTISE_OPS:
        return len(activations) == 1 and (node.op_type in QUANTISE_OPS or node.input[0] in sliced)
    return node.op_type in ELEMENTWISE_BINARY_OPS


def region_layer(nodes: list[onnx.NodeProto], constants: set[str], region_input: str) -> tuple[onnx.NodeProto, set[str]] | None:
    """The sliceable layer a region (its nodes in order) starts with, reading ``region_input``, and the tensors it and
    the column-wise nodes after it compute; None when the region is not one layer and column-wise nodes."""
    computing = [node for node in nodes if not (node.output and all(name in constants for name in node.output))]
    if not computing or computing[0].op_type not in SLICEABLE_OPS:
        return None
    layer = computing[0]
    if layer.input[0] != region_input or (layer.op_type == "Conv" and _attribute(layer, "group", 1) != 1):
        return None
    if len(layer.input) < 2 or layer.input[1] not in constants:
        return None
    sliced = {name for name in layer.output if name}
    if not extend_column_wise(computing[1:], constants, sliced):
        return None
    return layer, sliced


def extend_column_wise(nodes: list[onnx.NodeProto], constants: set[str], sliced: set[str]) -> bool:
    """Add the outputs of ``nodes`` to ``sliced`` if every one of them is column-wise; False (``sliced`` unchanged) if not."""
    grown = set(sliced)
    for node in nodes:
        if node.output and all(name in constants for name in node.output):
            continue
        if not column_wise(node, constants, grown):
            return False
        grown.update(name for name in node.output if name)
    sliced |= grown
    return True


def concatenate(slices: list[np.ndarray], axis: int) -> np.ndarray:
    """The slices' outputs joined back into the layer's output."""
    return np.concatenate(slices, axis=axis)
