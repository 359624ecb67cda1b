"""Splitting a graph that does not fit one device into consecutive parts, each for a device of its own.

The graph is cut only where it narrows to one float tensor (between residual blocks, say): every
value the rest of the graph needs then travels in that one tensor, node to node. Parts are as few
as the device's on-chip memory allows, and as even in weight as that number permits, with weights
counted as the device counts them (:func:`fpgaflow.fpga_runtime.placement.cost.graph_cost`). A layer
whose weights alone exceed a device (VGG-16's fc6 and fc7 in fp32) is a part of its own, cut by
output columns over as many devices as it needs (:mod:`fpgaflow.fpga_runtime.placement.slicing`): its
slices run side by side on the same input and their outputs are concatenated. Each part is
extracted with ``onnx.utils.extract_model``, and the chained parts are run against the whole graph:
they must answer as the unsplit graph does.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.utils
from onnx import shape_inference

from fpgaflow.fpga_runtime.errors import InvalidServiceDefinition, ResourceExhausted
from fpgaflow.fpga_runtime.ort import make_session
from fpgaflow.fpga_runtime.placement.cost import constant_tensors, graph_cost, weight_bits_of, weightless_copy
from fpgaflow.fpga_runtime.placement.slicing import (
    RegionWeights,
    SlicedLayer,
    concatenate,
    even_bounds,
    extend_column_wise,
    layer_output_axis,
    region_layer,
    sliced_region,
)
from fpgaflow.fpga_runtime.profiles import DeviceProfile
from fpgaflow.fpga_runtime.service import ServiceDefinition, Stage

PARITY_BATCH = 2
PARITY_SEED = 0


@dataclass(frozen=True)
class PlannedPart:
    """Consecutive layers from tensor ``input`` to tensor ``output``: on one device, or, when ``sliced`` is set, one
    layer (and the column-wise nodes after it) cut by output columns over ``sliced.slices`` devices side by side."""

    input: str
    output: str
    device_weight_bytes: tuple[int, ...]
    sliced: SlicedLayer | None = None

    @property
    def devices(self) -> int:
        return len(self.device_weight_bytes)

    @property
    def weight_bytes(self) -> int:
        return sum(self.device_weight_bytes)


@dataclass(frozen=True)
class SplitPlan:
    """The parts a graph runs in, one after the other, each on one device or sliced over several."""

    parts_in_order: tuple[PlannedPart, ...]

    @property
    def parts(self) -> int:
        return len(self.parts_in_order)

    @property
    def devices(self) -> int:
        return sum(part.devices for part in self.parts_in_order)

    @property
    def cuts(self) -> tuple[str, ...]:
        """The tensors handed from each part to the next."""
        return tuple(part.output for part in self.parts_in_order[:-1])

    @property
    def part_weight_bytes(self) -> tuple[int, ...]:
        return tuple(part.weight_bytes for part in self.parts_in_order)


def _names_read(node: onnx.NodeProto) -> set[str]:
    """Every tensor a node reads, including those its subgraphs (If, Loop, Scan) take from the outer graph."""
    names = {name for name in node.input if name}
    for attribute in node.attribute:
        graphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
        for subgraph in graphs:
            for inner in subgraph.node:
                names |= _names_read(inner)
    return names


def cut_candidates(model: onnx.ModelProto) -> list[tuple[int, str]]:
    """(boundary, tensor) for every place between nodes where exactly one float activation is alive.

    ``boundary`` is the index of the first node after the cut; constants (weights) never count as alive.
    """
    return _cut_candidates(inferred_shapes(model).graph)


def inferred_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model's graph with inferred shapes, its weights' values left out."""
    return shape_inference.infer_shapes(weightless_copy(model))


def _cut_candidates(graph: onnx.GraphProto) -> list[tuple[int, str]]:
    nodes = list(graph.node)
    constants = constant_tensors(graph)
    float_tensors = {
        value.name
        for value in (*graph.input, *graph.value_info, *graph.output)
        if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    }
    last_use: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in _names_read(node):
            last_use[name] = index
    for value in graph.output:
        last_use[value.name] = len(nodes)
    graph_inputs = {value.name for value in graph.input} - constants
    expiring: dict[int, list[str]] = defaultdict(list)
    live: set[str] = set()
    for name in graph_inputs:
        if name in last_use:
            live.add(name)
            expiring[last_use[name]].append(name)
    candidates = []
    for boundary in range(1, len(nodes)):
        for name in nodes[boundary - 1].output:
            if name and name not in constants and last_use.get(name, -1) >= boundary:
                live.add(name)
                expiring[last_use[name]].append(name)
        for name in expiring.pop(boundary - 1, []):
            live.discard(name)
        if len(live) == 1:
            (name,) = live
            if name in float_tensors and name not in graph_inputs:
                candidates.append((boundary, name))
    return candidates


def node_weight_bytes(model: onnx.ModelProto, numeric_format: str) -> list[int]:
    """On-chip bytes of the weights each node brings, as the device counts them (:func:`graph_cost`)."""
    by_label: Counter[str] = Counter()
    for layer in graph_cost(model, numeric_format).layers:
        by_label[layer.name] += layer.weight_bytes
    weights = []
    for index, node in enumerate(model.graph.node):
        label = node.name or f"{node.op_type}_{index}"
        weights.append(by_label.pop(label, 0))
    return weights


def _greedy(segment_weights: list[int], capacity: int) -> list[int]:
    """Indices of the segments that start a new part, filling each part up to ``capacity``."""
    starts, filled = [], 0
    for index, weight in enumerate(segment_weights):
        if filled + weight > capacity and filled > 0:
            starts.append(index)
            filled = 0
        filled += weight
    return starts


def _balanced_starts(segment_weights: list[int], capacity: int) -> list[int]:
    """The fewest parts of consecutive segments within ``capacity``, as even in weight as that count allows."""
    fewest = len(_greedy(segment_weights, capacity)) + 1
    low, high = max(segment_weights, default=0), capacity
    while low < high:
        middle = (low + high) // 2
        if len(_greedy(segment_weights, middle)) + 1 <= fewest:
            high = middle
        else:
            low = middle + 1
    return _greedy(segment_weights, low)


def _slices_needed(weight: int, columns: int, capacity: int) -> int | None:
    """Fewest column slices whose widest one fits ``capacity`` (weights are spread evenly over the columns)."""
    for slices in range(max(1, math.ceil(weight / capacity)), columns + 1):
        if math.ceil(weight * math.ceil(columns / slices) / columns) <= capacity:
            return slices
    return None


def _output_columns(graph: onnx.GraphProto, name: str, axis: int) -> int:
    """Size of tensor ``name`` along ``axis``; 0 when shape inference left it unknown."""
    for value in (*graph.value_info, *graph.output):
        if value.name == name:
            dims = value.type.tensor_type.shape.dim
            if len(dims) > axis and dims[axis].HasField("dim_value"):
                return dims[axis].dim_value
    return 0


def plan_split(model: onnx.ModelProto, numeric_format: str, capacity_bytes: int) -> SplitPlan:
    """The fewest devices whose weights each fit ``capacity_bytes``: consecutive parts balanced as evenly as their
    count allows, and a layer larger than a device cut by output columns over as many devices as it needs."""
    graph = inferred_shapes(model).graph
    nodes = list(graph.node)
    constants = constant_tensors(graph)
    candidates = _cut_candidates(graph)
    weights = node_weight_bytes(model, numeric_format)
    initializers = {tensor.name for tensor in graph.initializer}
    inputs = [value.name for value in graph.input if value.name not in initializers]
    outputs = [value.name for value in graph.output]
    edges = [0, *(boundary for boundary, _ in candidates), len(nodes)]
    tensors = [",".join(inputs), *(name for _, name in candidates), ",".join(outputs)]
    segment_weights = [sum(weights[start:end]) for start, end in zip(edges, edges[1:])]

    def refuse(first: int, last: int, weight: int, why: str) -> ResourceExhausted:
        after = f"tensor {tensors[first]!r}" if first else "the graph input"
        before = f"tensor {tensors[last + 1]!r}" if last + 1 < len(tensors) - 1 else "the graph output"
        return ResourceExhausted(
            f"the layers between {after} and {before} take {weight:,} bytes of weights in {numeric_format} and the graph "
            f"cannot be cut between them, but a device holds {capacity_bytes:,}: {why}"
        )

    parts: list[PlannedPart] = []
    run_start = 0

    def close_run(end: int) -> None:
        """Consecutive parts, one device each, for segments ``run_start:end``."""
        run = segment_weights[run_start:end]
        if not run:
            return
        bounds = [0, *_balanced_starts(run, capacity_bytes), len(run)]
        for first, stop in zip(bounds, bounds[1:]):
            parts.append(
                PlannedPart(
                    input=tensors[run_start + first],
                    output=tensors[run_start + stop],
                    device_weight_bytes=(sum(run[first:stop]),),
                )
            )

    index = 0
    while index < len(segment_weights):
        if segment_weights[index] <= capacity_bytes:
            index += 1
            continue
        found = region_layer(nodes[edges[index] : edges[index + 1]], constants, tensors[index])
        if found is None:
            raise refuse(index, index, segment_weights[index], "no split fits this device")
        layer, sliced = found
        end = index + 1
        while end < len(segment_weights) and extend_column_wise(nodes[edges[end] : edges[end + 1]], constants, sliced):
            end += 1
        if (index == 0 and len(inputs) != 1) or (end == len(segment_weights) and len(outputs) != 1):
            raise refuse(index, end - 1, segment_weights[index], "a sliced layer needs one tensor in and one out")
        weight = sum(segment_weights[index:end])
        axis = layer_output_axis(layer, _rank(graph, tensors[end]))
        columns = _output_columns(graph, tensors[end], axis)
        slices = _slices_needed(weight, columns, capacity_bytes)
        if slices is None:
            raise refuse(index, end - 1, weight, f"even one output column of layer {layer.name!r} does not fit a device")
        close_run(index)
        bounds = even_bounds(columns, slices)
        parts.append(
            PlannedPart(
                input=tensors[index],
                output=tensors[end],
                device_weight_bytes=tuple(math.ceil(weight * (b - a) / columns) for a, b in zip(bounds, bounds[1:])),
                sliced=SlicedLayer(layer=layer.name, axis=axis, columns=columns, bounds=bounds),
            )
        )
        run_start = index = end
    close_run(len(segment_weights))
    return SplitPlan(parts_in_order=tuple(parts))


def _rank(graph: onnx.GraphProto, name: str) -> int:
    for value in (*graph.value_info, *graph.output):
        if value.name == name and value.type.tensor_type.HasField("shape"):
            return len(value.type.tensor_type.shape.dim)
    return 2


def single_fpga_stage(service: ServiceDefinition) -> Stage:
    fpga = [stage for stage in service.stages if stage.target == "FPGA"]
    if len(fpga) != 1:
        raise InvalidServiceDefinition(
            f"service {service.name!r} has {len(fpga)} FPGA stages; only a service with one FPGA stage can be split"
        )
    return fpga[0]


def extract_parts(
    model: onnx.ModelProto, plan: SplitPlan, directory: Path, stem: str, cut_slices: bool = True
) -> list[tuple[Path, ...]]:
    """Write each part of ``plan`` into ``directory``: ``STEM.partK.onnx``, or ``STEM.partK.sliceJ.onnx`` for each column
    slice of a sliced part (``cut_slices=False``: a sliced part whole, as ``STEM.partK.onnx``, for the node that runs
    it to cut). One tuple of files per part, in order."""
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    inputs = [value.name for value in model.graph.input if value.name not in initializers]
    outputs = [value.name for value in model.graph.output]
    extractor = onnx.utils.Extractor(inferred_shapes(model))
    files: list[tuple[Path, ...]] = []
    for index, part in enumerate(plan.parts_in_order, start=1):
        part_inputs = inputs if index == 1 else [part.input]
        part_outputs = outputs if index == plan.parts else [part.output]
        region = extractor.extract_model(part_inputs, part_outputs)
        for tensor in region.graph.initializer:
            tensor.CopyFrom(initializers[tensor.name])
        _copy_metadata(model, region)
        if part.sliced is None or not cut_slices:
            path = directory / f"{stem}.part{index}.onnx"
            onnx.save(region, str(path))
            files.append((path,))
            continue
        weights = RegionWeights(region)
        slices = []
        for number, (start, stop) in enumerate(zip(part.sliced.bounds, part.sliced.bounds[1:]), start=1):
            slice_path = directory / f"{stem}.part{index}.slice{number}.onnx"
            onnx.save(sliced_region(region, start, stop, weights), str(slice_path))
            slices.append(slice_path)
        files.append(tuple(slices))
        del weights, region
    return files


def run_parts(plan: SplitPlan, part_files: list[tuple[Path, ...]], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor the chained parts compute from ``feeds``, the slices of a sliced part concatenated."""
    tensors = dict(feeds)
    for part, files in zip(plan.parts_in_order, part_files):
        results = []
        for path in files:
            session = make_session(path)
            names = [item.name for item in session.get_outputs()]
            feed = {item.name: tensors[item.name] for item in session.get_inputs()}
            results.append(dict(zip(names, session.run(names, feed))))
        if part.sliced is None:
            tensors.update(results[0])
        else:
            tensors[part.output] = concatenate([result[part.output] for result in results], part.sliced.axis)
    return tensors


def _copy_metadata(model: onnx.ModelProto, region: onnx.ModelProto) -> None:
    """Give a part the whole graph's metadata (its numeric format label among them)."""
    if model.metadata_props:
        onnx.helper.set_model_props(region, {prop.key: prop.value for prop in model.metadata_props})


def chained_parity(model_path: Path, plan: SplitPlan, part_files: list[tuple[Path, ...]], stage: Stage) -> tuple[float, float]:
    """Largest absolute difference between the whole graph and its chained parts on a random batch,
    and the largest absolute output (at least 1) it is measured against."""
    shape = [PARITY_BATCH if dim < 0 else dim for dim in stage.inputs[0].shape]
    batch = np.random.default_rng(PARITY_SEED).normal(0, 1, shape).astype(np.float32)
    whole = make_session(model_path)
    expected = whole.run(None, {stage.inputs[0].name: batch})
    tensors = run_parts(plan, part_files, {stage.inputs[0].name: batch})
    got = [tensors[item.name] for item in whole.get_outputs()]
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(expected, got))
    return difference, max(1.0, *(float(np.max(np.abs(a))) for a in expected))


def _devices_in(model: onnx.ModelProto, numeric_format: str, capacity_bytes: int) -> int | None:
    """Devices the graph needs with weights in ``numeric_format``, or None when no split fits a device."""
    try:
        return plan_split(model, numeric_format, capacity_bytes).devices
    except ResourceExhausted:
        return None


def narrower_formats(model: onnx.ModelProto, numeric_format: str, profile: DeviceProfile) -> str:
    """'int8 needs 2 devices, msfp8 needs 1 device': each format of the device narrower than ``numeric_format``."""
    bits = weight_bits_of(numeric_format)
    notes = []
    for name in sorted(profile.supported_formats, key=weight_bits_of, reverse=True):
        if weight_bits_of(name) < bits:
            needed = _devices_in(model, name, profile.onchip_memory_bytes)
            notes.append(f"{name} needs {needed} device{'s' if needed != 1 else ''}" if needed else f"{name} does not fit either")
    return ", ".join(notes)


def plan_for_devices(
    model: onnx.ModelProto, label: str, numeric_format: str, profile: DeviceProfile, max_devices: int | None = None
) -> SplitPlan:
    """The cluster's split of ``model`` for ``profile`` devices, refused (ResourceExhausted) when it needs more than
    ``max_devices``: the message gives the number needed and both ways out, more devices or a narrower format."""
    try:
        plan = plan_split(model, numeric_format, profile.onchip_memory_bytes)
    except ResourceExhausted as error:
        narrower = narrower_formats(model, numeric_format, profile)
        way_out = (
            f"package it in a narrower numeric format ({narrower})"
            if narrower
            else f"{profile.name} supports no numeric format narrower than {numeric_format}: use a larger device"
        )
        cost = graph_cost(model, numeric_format)
        raise ResourceExhausted(
            f"model {label} does not fit device {profile.name}: its weights take {cost.weight_bytes:,} bytes "
            f"({cost.weight_params:,} weights at {cost.weight_bits:.3g} bits in {numeric_format}) but the device has "
            f"{profile.onchip_memory_bytes:,} bytes of on-chip memory, and no split over several devices fits either "
            f"({error}); {way_out}"
        ) from None
    if max_devices is not None and plan.devices > max_devices:
        narrower = narrower_formats(model, numeric_format, profile)
        raise ResourceExhausted(
            f"model {label} needs {plan.devices} {profile.name} devices in {numeric_format} (its weights take "
            f"{sum(plan.part_weight_bytes):,} bytes, a device holds {profile.onchip_memory_bytes:,}) but this node may use "
            f"{max_devices}: serve it with --devices {plan.devices} or more"
            + (f", or package it in a narrower numeric format ({narrower})" if narrower else "")
        )
    return plan


def split_for_devices(
    model_path: Path, numeric_format: str, profile: DeviceProfile, directory: Path, max_devices: int | None = None
) -> tuple[SplitPlan, list[tuple[Path, ...]]]:
    """Plan the split of the graph at ``model_path`` for ``profile`` devices and write its parts into ``directory``."""
    model = onnx.load(str(model_path))
    plan = plan_for_devices(model, model_path.name, numeric_format, profile, max_devices)
    if plan.devices == 1:
        return plan, [(model_path,)]
    return plan, extract_parts(model, plan, directory, model_path.stem)
