"""Per-layer cost of an ONNX graph at batch 1, and the device latency model built on it.

A layer is a node that multiplies and accumulates (Conv, ConvTranspose, Gemm, MatMul), an
elementwise, normalisation or pooling node, or a node that holds weights. Nodes named
``<numeric format>/...`` are the pipeline's emulation of that format on a CPU (the block floating
point rounding of activations); the device computes in the format natively, so they cost
nothing here, and neither do QuantizeLinear/DequantizeLinear pairs. Weights are the
constant inputs of a layer (initializers, Constant nodes, and anything computed only from them,
such as the DequantizeLinear of an int8 weight); each constant is counted once, at the first
layer that reads it, at the bits the device stores it in (:mod:`fpgaflow.fpga_runtime.placement.storage`:
mantissas plus shared exponents per block, int8 values plus scales). Shapes come from ONNX
shape inference with every free batch dimension set to 1.

Latency model: a layer takes ``ceil((ceil(MACs / MAC units) + ceil(vector ops / vector lanes))
/ efficiency)`` cycles at the device clock; a request adds the host-link transfer of the graph's
inputs and outputs. A layer cut by output columns over several devices takes as long as its slowest
slice plus the gathering of its output (:func:`sliced_layer_seconds`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, shape_inference

from fpgaflow.fpga_runtime.errors import InvalidInput, InvalidServiceDefinition
from fpgaflow.fpga_runtime.graph_format import block_size_in_graph
from fpgaflow.fpga_runtime.numerics import NumericFormat
from fpgaflow.fpga_runtime.numerics import numeric_format as numeric_format_named
from fpgaflow.fpga_runtime.placement.storage import dot_operand_axes, weight_bits
from fpgaflow.fpga_runtime.profiles import DeviceProfile

MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
# Vector operations per output element.
ELEMENTWISE_OPS = {
    **dict.fromkeys(
        (
            "Add",
            "Sub",
            "Mul",
            "Div",
            "Relu",
            "LeakyRelu",
            "PRelu",
            "Sigmoid",
            "HardSigmoid",
            "HardSwish",
            "Tanh",
            "Clip",
            "Max",
            "Min",
            "Sum",
            "Mean",
            "Exp",
            "Log",
            "Sqrt",
            "Pow",
            "Reciprocal",
            "Neg",
            "Abs",
            "Erf",
            "Elu",
            "Selu",
            "Softplus",
            "Gelu",
            "Resize",
            "Upsample",
        ),
        1,
    ),
    "BatchNormalization": 2,
    "Softmax": 3,
    "LogSoftmax": 3,
    "LayerNormalization": 5,
}
WINDOW_POOL_OPS = frozenset({"MaxPool", "AveragePool", "LpPool"})
REDUCING_OPS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "ReduceSum", "ReduceMin"})
# Which inputs of a layer may be weights; None: any constant input.
WEIGHT_INPUTS: dict[str, tuple[int, ...] | None] = {
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "Gemm": None,
    "MatMul": None,
    "BatchNormalization": (1, 2, 3, 4),
    "LayerNormalization": (1, 2),
    "PRelu": (1,),
    **dict.fromkeys(("Add", "Sub", "Mul", "Div", "Max", "Min", "Sum"), None),
}


@dataclass(frozen=True)
class LayerCost:
    name: str
    op_type: str
    macs: int
    vector_ops: int
    weight_params: int
    weight_bytes: int
    output_bytes: int


@dataclass(frozen=True)
class GraphCost:
    """The per-layer table of one graph in one numeric format, batch 1."""

    numeric_format: str
    block_size: int
    layers: tuple[LayerCost, ...]
    input_bytes: int
    output_bytes: int

    @property
    def weight_bits(self) -> float:
        """Bits a weight takes on chip, on average over the graph (scales and shared exponents included)."""
        return 8 * self.weight_bytes / self.weight_params if self.weight_params else 0.0

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def vector_ops(self) -> int:
        return sum(layer.vector_ops for layer in self.layers)

    @property
    def weight_params(self) -> int:
        return sum(layer.weight_params for layer in self.layers)

    @property
    def weight_bytes(self) -> int:
        return sum(layer.weight_bytes for layer in self.layers)


@dataclass(frozen=True)
class LatencyEstimate:
    """Modelled device time of one batch-1 request."""

    profile: str
    numeric_format: str
    layer_cycles: tuple[int, ...]
    clock_hz: float
    transfer_seconds: float

    @property
    def compute_cycles(self) -> int:
        return sum(self.layer_cycles)

    @property
    def compute_seconds(self) -> float:
        return self.compute_cycles / self.clock_hz

    @property
    def seconds(self) -> float:
        return self.compute_seconds + self.transfer_seconds


@dataclass(frozen=True)
class CostReport:
    """A graph's cost on one device: resources, fit, and modelled latency."""

    graph: GraphCost
    latency: LatencyEstimate
    onchip_memory_bytes: int

    @property
    def fits(self) -> bool:
        return self.graph.weight_bytes <= self.onchip_memory_bytes

    def to_dict(self) -> dict:
        return {
            "profile": self.latency.profile,
            "numeric_format": self.graph.numeric_format,
            "weight_bits": self.graph.weight_bits,
            "block_size": self.graph.block_size,
            "layers": [
                {**asdict(layer), "cycles": cycles, "seconds": cycles / self.latency.clock_hz}
                for layer, cycles in zip(self.graph.layers, self.latency.layer_cycles)
            ],
            "totals": {
                "macs": self.graph.macs,
                "vector_ops": self.graph.vector_ops,
                "weight_params": self.graph.weight_params,
                "weight_bytes": self.graph.weight_bytes,
                "onchip_memory_bytes": self.onchip_memory_bytes,
                "fits": self.fits,
                "input_bytes": self.graph.input_bytes,
                "output_bytes": self.graph.output_bytes,
                "compute_cycles": self.latency.compute_cycles,
                "compute_seconds": self.latency.compute_seconds,
                "transfer_seconds": self.latency.transfer_seconds,
                "modelled_seconds": self.latency.seconds,
            },
        }


def weight_bits_of(numeric_format: str) -> float:
    """Nominal bits of one weight in a numeric format (default block size), to rank formats by width."""
    return _format(numeric_format).bits_per_weight


def _format(name: str, block_size: int | None = None) -> NumericFormat:
    try:
        return numeric_format_named(name, block_size)
    except ValueError as error:
        raise InvalidInput(str(error)) from None


def graph_cost(model: str | Path | onnx.ModelProto, numeric_format: str, block_size: int | None = None) -> GraphCost:
    """The per-layer table of an ONNX model (path or proto) with weights in ``numeric_format``.

    ``block_size`` of a block floating point format: given, else the graph's own when its metadata labels it
    with this format, else the format's default.
    """
    _format(numeric_format)
    proto = _inferred_at_batch_1(model)
    fmt = _format(numeric_format, block_size if block_size is not None else block_size_in_graph(proto, numeric_format))
    graph = proto.graph
    shapes, itemsizes = _tensor_shapes(graph)
    constants = constant_tensors(graph)
    producers = {name: node for node in graph.node for name in node.output if name in constants}
    counted: set[str] = set()
    layers = []
    emulation = f"{numeric_format}/"
    for index, node in enumerate(graph.node):
        if node.name.startswith(emulation) or (node.output and all(name in constants for name in node.output)):
            continue
        label = node.name or f"{node.op_type}_{index}"
        weights = [(position, name) for position, name in _weight_inputs(node, constants) if name not in counted]
        counted.update(name for _, name in weights)
        macs = _macs(node, label, shapes)
        vector_ops = _vector_ops(node, label, shapes)
        if not (macs or vector_ops or weights):
            continue
        transposed = {key: _attribute(node, key, 0) for key in ("transA", "transB")}
        bits = sum(
            weight_bits(
                _shape(name, label, shapes),
                fmt,
                dot_operand_axes(node.op_type, position, transposed),
                _graph_scales(producers.get(name), label, shapes),
            )
            for position, name in weights
        )
        layers.append(
            LayerCost(
                name=label,
                op_type=node.op_type,
                macs=macs,
                vector_ops=vector_ops,
                weight_params=sum(math.prod(_shape(name, label, shapes)) for _, name in weights),
                weight_bytes=math.ceil(bits / 8),
                output_bytes=sum(_bytes(name, label, shapes, itemsizes) for name in node.output if name),
            )
        )
    initializers = {tensor.name for tensor in graph.initializer}
    return GraphCost(
        numeric_format=numeric_format,
        block_size=fmt.block_size,
        layers=tuple(layers),
        input_bytes=sum(
            _bytes(value.name, "graph input", shapes, itemsizes) for value in graph.input if value.name not in initializers
        ),
        output_bytes=sum(_bytes(value.name, "graph output", shapes, itemsizes) for value in graph.output),
    )


def _graph_scales(producer: onnx.NodeProto | None, label: str, shapes: dict[str, tuple[int, ...]]) -> int | None:
    """How many scales the graph dequantizes a weight with, when a DequantizeLinear produces it."""
    if producer is None or producer.op_type != "DequantizeLinear":
        return None
    return math.prod(_shape(producer.input[1], label, shapes))


def estimate_latency(cost: GraphCost, profile: DeviceProfile) -> LatencyEstimate:
    """Modelled cycles per layer and seconds per request of ``cost`` on ``profile``."""
    mac_units = profile.macs_per_cycle(cost.numeric_format)
    layer_cycles = tuple(
        math.ceil((math.ceil(layer.macs / mac_units) + math.ceil(layer.vector_ops / profile.vector_lanes)) / profile.efficiency)
        for layer in cost.layers
    )
    return LatencyEstimate(
        profile=profile.name,
        numeric_format=cost.numeric_format,
        layer_cycles=layer_cycles,
        clock_hz=profile.clock_hz,
        transfer_seconds=(cost.input_bytes + cost.output_bytes) / profile.host_link_bytes_per_second,
    )


def sliced_layer_seconds(slice_seconds: Sequence[float], gathered_bytes: int, profile: DeviceProfile) -> float:
    """Modelled time of a layer cut by output columns: its slices run side by side on their devices, the layer is done
    when the slowest is, and then its outputs (``gathered_bytes`` at batch 1) are gathered over the host link."""
    return max(slice_seconds) + gathered_bytes / profile.host_link_bytes_per_second


def cost_report(
    model: str | Path | onnx.ModelProto, numeric_format: str, profile: DeviceProfile, block_size: int | None = None
) -> CostReport:
    """Resources, fit and modelled latency of a model on a device, in one numeric format (``block_size``: as
    :func:`graph_cost`)."""
    profile.require_format(numeric_format)
    cost = graph_cost(model, numeric_format, block_size)
    return CostReport(graph=cost, latency=estimate_latency(cost, profile), onchip_memory_bytes=profile.onchip_memory_bytes)


SMALL_TENSOR_BYTES = 4096  # initializers up to this size keep their values (shape inference may read them)


def weightless_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the values of its large initializers left out (names, types, shapes and the model's
    metadata kept): what shape inference and the cost table need, without copying every byte of the weights
    (VGG-16: 550 MB) through them."""
    copy = onnx.ModelProto(ir_version=model.ir_version)
    copy.opset_import.extend(model.opset_import)
    copy.functions.extend(model.functions)
    copy.metadata_props.extend(model.metadata_props)
    source, graph = model.graph, copy.graph
    graph.name = source.name
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(graph, field).extend(getattr(source, field))
    for tensor in source.initializer:
        kept = graph.initializer.add()
        if tensor.ByteSize() > SMALL_TENSOR_BYTES:
            kept.name, kept.data_type = tensor.name, tensor.data_type
            kept.dims.extend(tensor.dims)
        else:
            kept.CopyFrom(tensor)
    return copy


def _inferred_at_batch_1(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        proto = weightless_copy(model)
    else:
        try:
            proto = weightless_copy(onnx.load(str(model)))
        except (OSError, DecodeError) as error:
            raise InvalidServiceDefinition(f"cannot read ONNX model {model}: {error}") from None
    initializers = {tensor.name for tensor in proto.graph.initializer}
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        for position, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            if position != 0:
                raise InvalidServiceDefinition(
                    f"graph input {value.name!r} has a free dimension at position {position} "
                    f"({dim.dim_param or 'unknown'}); the cost model needs every size but the batch fixed"
                )
            dim.Clear()
            dim.dim_value = 1
    for value in proto.graph.output:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_param"):
            dims[0].Clear()
            dims[0].dim_value = 1
    del proto.graph.value_info[:]
    try:
        return shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as error:  # onnx raises InferenceError and plain RuntimeError alike
        raise InvalidServiceDefinition(f"ONNX shape inference failed: {error}") from None


def _tensor_shapes(graph: onnx.GraphProto) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    shapes: dict[str, tuple[int, ...]] = {}
    itemsizes: dict[str, int] = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        dims = tensor_type.shape.dim
        if all(dim.HasField("dim_value") for dim in dims):
            shapes[value.name] = tuple(dim.dim_value for dim in dims)
            itemsizes[value.name] = _itemsize(tensor_type.elem_type)
    for tensor in graph.initializer:
        shapes[tensor.name] = tuple(tensor.dims)
        itemsizes[tensor.name] = _itemsize(tensor.data_type)
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    shapes[node.output[0]] = tuple(attribute.t.dims)
                    itemsizes[node.output[0]] = _itemsize(attribute.t.data_type)
    return shapes, itemsizes


def _itemsize(elem_type: int) -> int:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return 0


def constant_tensors(graph: onnx.GraphProto) -> set[str]:
    """Initializers, Constant outputs, and every tensor computed only from them: what the device holds as weights."""
    constants = {tensor.name for tensor in graph.initializer}
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type == "Constant" or (inputs and all(name in constants for name in inputs)):
            constants.update(name for name in node.output if name)
    return constants


def _weight_inputs(node: onnx.NodeProto, constants: set[str]) -> list[tuple[int, str]]:
    if node.op_type not in WEIGHT_INPUTS:
        return []
    positions = WEIGHT_INPUTS[node.op_type]
    return [
        (position, name)
        for position, name in enumerate(node.input)
        if name and name in constants and (positions is None or position in positions)
    ]


def _shape(name: str, label: str, shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    try:
        return shapes[name]
    except KeyError:
        raise InvalidServiceDefinition(
            f"layer {label!r}: shape of tensor {name!r} is unknown after shape inference at batch 1"
        ) from None


def _bytes(name: str, label: str, shapes: dict[str, tuple[int, ...]], itemsizes: dict[str, int]) -> int:
    return math.prod(_shape(name, label, shapes)) * itemsizes.get(name, 0)


def _attribute(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _macs(node: onnx.NodeProto, label: str, shapes: dict[str, tuple[int, ...]]) -> int:
    if node.op_type not in MAC_OPS:
        return 0
    output = _shape(node.output[0], label, shapes)
    if node.op_type == "Conv":
        # weight [M, C/group, k...]: every output element takes C/group x prod(k) MACs.
        return math.prod(output[1:]) * math.prod(_shape(node.input[1], label, shapes)[1:])
    if node.op_type == "ConvTranspose":
        # weight [C, M/group, k...]: every input element feeds M/group x prod(k) outputs.
        return math.prod(_shape(node.input[0], label, shapes)[1:]) * math.prod(_shape(node.input[1], label, shapes)[1:])
    a = _shape(node.input[0], label, shapes)
    inner = (a[0] if _attribute(node, "transA", 0) else a[1]) if node.op_type == "Gemm" else a[-1]
    return math.prod(output) * inner


def _vector_ops(node: onnx.NodeProto, label: str, shapes: dict[str, tuple[int, ...]]) -> int:
    if node.op_type in ELEMENTWISE_OPS:
        return ELEMENTWISE_OPS[node.op_type] * math.prod(_shape(node.output[0], label, shapes))
    if node.op_type in WINDOW_POOL_OPS:
        return math.prod(_shape(node.output[0], label, shapes)) * math.prod(_attribute(node, "kernel_shape", [1]))
    if node.op_type in REDUCING_OPS:
        return math.prod(_shape(node.input[0], label, shapes))
    return 0
