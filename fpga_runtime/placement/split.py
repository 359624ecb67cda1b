"""Splitting a graph that does not fit one device into consecutive parts, each for a device of its own.

The graph is cut only where it narrows to one float tensor (between residual blocks, say): every
value the rest of the graph needs then travels in that one tensor, node to node. Parts are as few
as the device's on-chip memory allows, and as even in weight as that number permits, with weights
counted as the device counts them (:func:`fpgaflow.fpga_runtime.placement.cost.graph_cost`). Each part is
extracted with ``onnx.utils.extract_model``, and the chained parts are run against the whole graph:
they must answer as the unsplit graph does.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.utils
from onnx import shape_inference

from fpgaflow.fpga_runtime.errors import InvalidServiceDefinition, ResourceExhausted
from fpgaflow.fpga_runtime.ort import make_session
from fpgaflow.fpga_runtime.placement.cost import constant_tensors, graph_cost, weight_bits_of
from fpgaflow.fpga_runtime.profiles import DeviceProfile
from fpgaflow.fpga_runtime.service import ServiceDefinition, Stage

PARITY_BATCH = 2
PARITY_SEED = 0


@dataclass(frozen=True)
class SplitPlan:
    """Where to cut: the tensor handed from each part to the next, and each part's weight bytes."""

    cuts: tuple[str, ...]
    boundaries: tuple[int, ...]
    part_weight_bytes: tuple[int, ...]

    @property
    def parts(self) -> int:
        return len(self.part_weight_bytes)


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
    graph = shape_inference.infer_shapes(model).graph
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


def plan_split(model: onnx.ModelProto, numeric_format: str, capacity_bytes: int) -> SplitPlan:
    """The fewest parts whose weights each fit ``capacity_bytes``, balanced as evenly as that count allows."""
    candidates = cut_candidates(model)
    weights = node_weight_bytes(model, numeric_format)
    edges = [0, *(boundary for boundary, _ in candidates), len(weights)]
    segment_weights = [sum(weights[start:end]) for start, end in zip(edges, edges[1:])]
    for index, weight in enumerate(segment_weights):
        if weight > capacity_bytes:
            after = f"tensor {candidates[index - 1][1]!r}" if index else "the graph input"
            before = f"tensor {candidates[index][1]!r}" if index < len(candidates) else "the graph output"
            raise ResourceExhausted(
                f"the layers between {after} and {before} take {weight:,} bytes of weights in {numeric_format} and the graph "
                f"cannot be cut between them, but a device holds {capacity_bytes:,}: no split fits this device"
            )
    fewest = len(_greedy(segment_weights, capacity_bytes)) + 1
    low, high = max(segment_weights, default=0), capacity_bytes
    while low < high:
        middle = (low + high) // 2
        if len(_greedy(segment_weights, middle)) + 1 <= fewest:
            high = middle
        else:
            low = middle + 1
    starts = _greedy(segment_weights, low)
    part_edges = [0, *starts, len(segment_weights)]
    return SplitPlan(
        cuts=tuple(candidates[start - 1][1] for start in starts),
        boundaries=tuple(candidates[start - 1][0] for start in starts),
        part_weight_bytes=tuple(sum(segment_weights[a:b]) for a, b in zip(part_edges, part_edges[1:])),
    )


def single_fpga_stage(service: ServiceDefinition) -> Stage:
    fpga = [stage for stage in service.stages if stage.target == "FPGA"]
    if len(fpga) != 1:
        raise InvalidServiceDefinition(
            f"service {service.name!r} has {len(fpga)} FPGA stages; only a service with one FPGA stage can be split"
        )
    return fpga[0]


def extract_parts(model_path: Path, model: onnx.ModelProto, plan: SplitPlan, directory: Path, stem: str) -> list[Path]:
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = [value.name for value in model.graph.input if value.name not in initializers]
    outputs = [value.name for value in model.graph.output]
    edges = [inputs, *([cut] for cut in plan.cuts), outputs]
    paths = []
    for index, (part_inputs, part_outputs) in enumerate(zip(edges, edges[1:]), start=1):
        path = directory / f"{stem}.part{index}.onnx"
        onnx.utils.extract_model(str(model_path), str(path), part_inputs, part_outputs)
        _copy_metadata(model, path)
        paths.append(path)
    return paths


def _copy_metadata(model: onnx.ModelProto, path: Path) -> None:
    """Give a part the whole graph's metadata (its numeric format label among them)."""
    if not model.metadata_props:
        return
    part = onnx.load(str(path))
    onnx.helper.set_model_props(part, {prop.key: prop.value for prop in model.metadata_props})
    onnx.save(part, str(path))


def chained_parity(model_path: Path, part_paths: list[Path], stage: Stage) -> tuple[float, float]:
    """Largest absolute difference between the whole graph and its chained parts on a random batch,
    and the largest absolute output (at least 1) it is measured against."""
    shape = [PARITY_BATCH if dim < 0 else dim for dim in stage.inputs[0].shape]
    batch = np.random.default_rng(PARITY_SEED).normal(0, 1, shape).astype(np.float32)
    whole = make_session(model_path)
    expected = whole.run(None, {stage.inputs[0].name: batch})
    tensors = {stage.inputs[0].name: batch}
    for path in part_paths:
        session = make_session(path)
        names = [item.name for item in session.get_outputs()]
        tensors.update(zip(names, session.run(names, {item.name: tensors[item.name] for item in session.get_inputs()})))
    got = [tensors[item.name] for item in whole.get_outputs()]
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(expected, got))
    return difference, max(1.0, *(float(np.max(np.abs(a))) for a in expected))


def _devices_in(model: onnx.ModelProto, numeric_format: str, capacity_bytes: int) -> int | None:
    """Devices the graph needs with weights in ``numeric_format``, or None when no split fits a device."""
    try:
        return plan_split(model, numeric_format, capacity_bytes).parts
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
    if max_devices is not None and plan.parts > max_devices:
        narrower = narrower_formats(model, numeric_format, profile)
        raise ResourceExhausted(
            f"model {label} needs {plan.parts} {profile.name} devices in {numeric_format} (its weights take "
            f"{sum(plan.part_weight_bytes):,} bytes, a device holds {profile.onchip_memory_bytes:,}) but this node may use "
            f"{max_devices}: serve it with --devices {plan.parts} or more"
            + (f", or package it in a narrower numeric format ({narrower})" if narrower else "")
        )
    return plan


def split_for_devices(
    model_path: Path, numeric_format: str, profile: DeviceProfile, directory: Path, max_devices: int | None = None
) -> tuple[SplitPlan, list[Path]]:
    """Plan the split of the graph at ``model_path`` for ``profile`` devices and write its parts into ``directory``."""
    model = onnx.load(str(model_path))
    plan = plan_for_devices(model, model_path.name, numeric_format, profile, max_devices)
    if plan.parts == 1:
        return plan, [model_path]
    return plan, extract_parts(model_path, model, plan, directory, model_path.stem)
