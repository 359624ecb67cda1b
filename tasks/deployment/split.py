"""Split a service whose FPGA stage does not fit one device into consecutive parts across several devices.

The FPGA stage's graph is cut only where it narrows to one float tensor (between residual blocks,
say): every value the rest of the graph needs then travels in that one tensor, node to node. Parts
are as few as the device's on-chip memory allows, and as even in weight as that number permits.
Each part is extracted with ``onnx.utils.extract_model``, checked against the device the way the
device itself checks it (:func:`fpgaflow.fpga_runtime.graph_cost.cost_report`), and the chained parts are
run against the whole graph before the split service is written: it must answer as the unsplit
model does. The split service directory is an ordinary one whose ``service.json`` lists the parts
as consecutive FPGA stages (:mod:`fpgaflow.fpga_runtime.chain` runs them, one node per part).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.utils
from onnx import shape_inference
from prefect import task
from prefect.cache_policies import NO_CACHE

from fpgaflow.fpga_runtime.errors import InvalidServiceDefinition, ResourceExhausted
from fpgaflow.fpga_runtime.graph_cost import cost_report, graph_cost
from fpgaflow.fpga_runtime.ort import make_session
from fpgaflow.fpga_runtime.profiles import DeviceProfile, load_profile
from fpgaflow.fpga_runtime.service import ServiceDefinition, Stage, load_service
from fpgaflow.fpga_runtime.settings import Settings, get_settings
from fpgaflow.tasks.artifacts import publish_markdown
from fpgaflow.tasks.files import replace_directory_atomic
from fpgaflow.tasks.packaging.service_dir import stage_from_onnx

log = logging.getLogger(__name__)
SOURCE_SPLIT_FROM = "split_from"
SOURCE_SPLIT_DEVICE = "split_device"
SOURCE_SPLIT_OF = "split_of_sha256"
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


@dataclass(frozen=True)
class SplitResult:
    service_dir: Path
    source_dir: Path
    device_profile: str
    onchip_memory_bytes: int
    parts: int
    cuts: tuple[str, ...] = ()
    part_weight_bytes: tuple[int, ...] = ()
    max_abs_diff: float = 0.0

    @property
    def split(self) -> bool:
        return self.parts > 1


# -- where a graph can be cut -------------------------------------------------------------------


def _constants(graph: onnx.GraphProto) -> set[str]:
    constants = {tensor.name for tensor in graph.initializer}
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type == "Constant" or (inputs and all(name in constants for name in inputs)):
            constants.update(name for name in node.output if name)
    return constants


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
    constants = _constants(graph)
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
    by_label = Counter()
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


# -- writing the split service -------------------------------------------------------------------


def _fpga_stage(service: ServiceDefinition) -> Stage:
    fpga = [stage for stage in service.stages if stage.target == "FPGA"]
    if len(fpga) != 1:
        raise InvalidServiceDefinition(
            f"service {service.name!r} has {len(fpga)} FPGA stages; only a service with one FPGA stage can be split"
        )
    return fpga[0]


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _extract_parts(model_path: Path, model: onnx.ModelProto, plan: SplitPlan, directory: Path, stem: str) -> list[Path]:
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = [value.name for value in model.graph.input if value.name not in initializers]
    outputs = [value.name for value in model.graph.output]
    edges = [inputs, *([cut] for cut in plan.cuts), outputs]
    paths = []
    for index, (part_inputs, part_outputs) in enumerate(zip(edges, edges[1:]), start=1):
        path = directory / f"{stem}.part{index}.onnx"
        onnx.utils.extract_model(str(model_path), str(path), part_inputs, part_outputs)
        paths.append(path)
    return paths


def _parity(model_path: Path, part_paths: list[Path], stage: Stage) -> tuple[float, float]:
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


def split_service(
    service_dir: str | Path, output_dir: str | Path, device_profile: str | Path | DeviceProfile, settings: Settings | None = None
) -> SplitResult:
    """Write ``output_dir``: ``service_dir`` with its FPGA stage cut into parts that each fit one device."""
    settings = settings or get_settings()
    service_dir, output_dir = Path(service_dir), Path(output_dir)
    service = load_service(service_dir)
    profile = device_profile if isinstance(device_profile, DeviceProfile) else load_profile(device_profile)
    stage = _fpga_stage(service)
    model_path = service_dir / stage.file
    model = onnx.load(str(model_path))
    plan = plan_split(model, stage.numeric_format, profile.onchip_memory_bytes)
    if plan.parts == 1:
        raise InvalidServiceDefinition(f"{stage.file} fits one {profile.name} device in {stage.numeric_format}: nothing to split")
    stem = Path(stage.file).stem
    measured: dict[str, float] = {}

    def build(directory: Path) -> None:
        for path in sorted(service_dir.rglob("*")):
            relative = path.relative_to(service_dir)
            if path.is_file() and str(relative) != stage.file and relative.name != "service.json":
                (directory / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, directory / relative)
        parts = _extract_parts(model_path, model, plan, directory, stem)
        stages = []
        for index, path in enumerate(parts, start=1):
            report = cost_report(path, stage.numeric_format, profile)
            if not report.fits:
                raise ResourceExhausted(
                    f"part {index} of {stage.file} takes {report.graph.weight_bytes:,} bytes on the device, more than its "
                    f"{profile.onchip_memory_bytes:,}: its weights are shared with another part"
                )
            stages.append(stage_from_onnx(f"{stage.name}.part{index}", "FPGA", path, stage.numeric_format, path.name))
        measured["diff"], scale = _parity(model_path, parts, stage)
        if measured["diff"] > settings.parity_tolerance * scale:
            raise InvalidServiceDefinition(
                f"the chained parts of {stage.file} differ from the whole graph by {measured['diff']:.3g} "
                f"(tolerance {settings.parity_tolerance * scale:.3g})"
            )
        index = service.stages.index(stage)
        split = service.model_copy(
            update={
                "stages": (*service.stages[:index], *stages, *service.stages[index + 1 :]),
                "source": {
                    **service.source,
                    SOURCE_SPLIT_FROM: str(service_dir.resolve()),
                    SOURCE_SPLIT_DEVICE: profile.name,
                    SOURCE_SPLIT_OF: _sha256(model_path),
                },
            }
        )
        ServiceDefinition.model_validate(split.model_dump()).save(directory)
        load_service(directory)

    replace_directory_atomic(build, output_dir)
    log.info("split %s into %d parts for %s at tensors %s", stage.file, plan.parts, profile.name, list(plan.cuts))
    return SplitResult(
        service_dir=output_dir,
        source_dir=service_dir,
        device_profile=profile.name,
        onchip_memory_bytes=profile.onchip_memory_bytes,
        parts=plan.parts,
        cuts=plan.cuts,
        part_weight_bytes=plan.part_weight_bytes,
        max_abs_diff=measured["diff"],
    )


def fit_to_device(
    service_dir: str | Path, device_profile: str | Path, settings: Settings | None = None
) -> SplitResult:
    """The service directory to deploy on ``device_profile`` devices: itself when every FPGA stage fits one
    device, else its split under ``<home>/split/<name>-<version>-<profile>`` (made once per FPGA graph)."""
    settings = settings or get_settings()
    service_dir = Path(service_dir).resolve()
    service = load_service(service_dir)
    profile = load_profile(device_profile)
    fpga = [stage for stage in service.stages if stage.target == "FPGA"]
    reports = [cost_report(service_dir / stage.file, stage.numeric_format, profile) for stage in fpga]
    if all(report.fits for report in reports):
        return SplitResult(
            service_dir=service_dir,
            source_dir=Path(service.source.get(SOURCE_SPLIT_FROM, service_dir)),
            device_profile=profile.name,
            onchip_memory_bytes=profile.onchip_memory_bytes,
            parts=max(1, len(fpga)),
            part_weight_bytes=tuple(report.graph.weight_bytes for report in reports),
        )
    target = settings.home / "split" / f"{service.name}-{service.version}-{profile.name}"
    if target.is_dir():
        existing = load_service(target)
        if existing.source.get(SOURCE_SPLIT_OF) == _sha256(service_dir / _fpga_stage(service).file):
            parts = [stage for stage in existing.stages if stage.target == "FPGA"]
            weights = tuple(cost_report(target / stage.file, stage.numeric_format, profile).graph.weight_bytes for stage in parts)
            return SplitResult(
                service_dir=target,
                source_dir=service_dir,
                device_profile=profile.name,
                onchip_memory_bytes=profile.onchip_memory_bytes,
                parts=len(parts),
                part_weight_bytes=weights,
            )
    return split_service(service_dir, target, profile, settings)


def _markdown(result: SplitResult) -> str:
    rows = "\n".join(
        f"| {index} | {weight / 1e6:.2f} MB | {cut} |"
        for index, (weight, cut) in enumerate(zip(result.part_weight_bytes, (*result.cuts, "(outputs)")), start=1)
    )
    return (
        f"Split across **{result.parts}** {result.device_profile} devices "
        f"({result.onchip_memory_bytes / 1e6:.2f} MB on chip each); chained parts vs whole graph: max abs diff "
        f"{result.max_abs_diff:.3g}.\n\n| part | weights | hands on |\n|---|---|---|\n{rows}\n"
    )


@task(name="fit-to-device", cache_policy=NO_CACHE)
def fit_to_device_task(service_dir: str | Path, device_profile: str) -> SplitResult:
    result = fit_to_device(service_dir, device_profile)
    if result.split:
        publish_markdown("model-split", _markdown(result), description="FPGA stage split across devices")
    return result
