"""Runs a service definition: preprocess (CPU) → FPGA stage (emulated device) → CPU stages.

One request is one pass: encoded images are decoded and preprocessed into one float32 batch,
and each stage's outputs feed the next stage by name, with no re-encoding in between. A stage is
a small plug-in (``load`` + ``run``) chosen by its target.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np

from fpgaflow.fpga_runtime.device import DeviceStats, EmulatedDevice, chain_stats
from fpgaflow.fpga_runtime.errors import FpgaflowError, InvalidInput, InvalidServiceDefinition, ResourceExhausted
from fpgaflow.fpga_runtime.ort import make_session
from fpgaflow.fpga_runtime.placement.cost import sliced_layer_seconds
from fpgaflow.fpga_runtime.placement.slicing import concatenate
from fpgaflow.fpga_runtime.placement.split import PlannedPart, split_for_devices
from fpgaflow.fpga_runtime.preprocessing import DEFAULT_MAX_IMAGE_PIXELS, preprocess
from fpgaflow.fpga_runtime.profiles import DeviceProfile, load_profile
from fpgaflow.fpga_runtime.service import ServiceDefinition, Stage, load_service
from fpgaflow.fpga_runtime.settings import get_settings

# Names of the timings reported to ``on_timing``: one per kind of work a request does.
PREPROCESS, FPGA, CPU = "preprocess", "fpga", "cpu"
TimingObserver = Callable[[str, float], None]


class StageRunner(Protocol):
    stage: Stage
    timing: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


class FpgaStage:
    """A stage on the emulated device, in the stage's numeric format."""

    timing = FPGA

    def __init__(self, stage: Stage, path: Path, device: EmulatedDevice) -> None:
        self.stage = stage
        self.device = device
        self.devices = (device,)
        device.load(path, stage.numeric_format, stage.block_size)
        self.input_names = device.input_names
        self.output_names = device.output_names

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.device.run(feeds)

    @property
    def modelled_seconds(self) -> float:
        return self.device.cost.latency.seconds

    def close(self) -> None:
        self.device.unload()


class DevicePart:
    """One part of a chained stage: one device, or the devices holding the column slices of one layer, which run
    side by side on the same input and whose outputs are concatenated into the layer's output."""

    def __init__(self, part: PlannedPart, files: Sequence[Path], devices: Sequence[EmulatedDevice], stage: Stage) -> None:
        if len(files) != len(devices) or not files:
            raise ValueError(f"one device per file: {len(files)} files, {len(devices)} devices")
        self.part = part
        self.devices = tuple(devices)
        for path, device in zip(files, devices):
            device.load(path, stage.numeric_format, stage.block_size)
        self.input_names = self.devices[0].input_names
        self.output_names = self.devices[0].output_names
        self._side_by_side = ThreadPoolExecutor(len(devices), "fpgaflow-slice") if part.sliced is not None else None

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._side_by_side is None or self.part.sliced is None:
            return self.devices[0].run({name: feeds[name] for name in self.input_names})
        slices = list(
            self._side_by_side.map(lambda device: device.run({name: feeds[name] for name in device.input_names}), self.devices)
        )
        output = self.part.output
        return {output: concatenate([result[output] for result in slices], self.part.sliced.axis)}

    @property
    def modelled_seconds(self) -> float:
        if self.part.sliced is None:
            return self.devices[0].cost.latency.seconds
        reports = [device.cost for device in self.devices]
        return sliced_layer_seconds(
            [report.latency.seconds for report in reports],
            sum(report.graph.output_bytes for report in reports),
            self.devices[0].profile,
        )

    def close(self) -> None:
        if self._side_by_side is not None:
            self._side_by_side.shutdown()
        for device in self.devices:
            device.unload()


class ChainedFpgaStage:
    """A stage too large for one device, cut into consecutive parts chained in this process, as the cluster splits it
    (:func:`~fpgaflow.fpga_runtime.placement.split.plan_split`): one device per part, or one per column slice of a layer
    larger than a device.

    Each request runs part 1, hands the tensor it ends with to part 2, and so on; the last part's
    outputs are the stage's outputs.
    """

    timing = FPGA

    def __init__(self, stage: Stage, parts: Sequence[DevicePart]) -> None:
        if not parts:
            raise ValueError("a chained stage needs at least one part")
        self.stage = stage
        self.parts = tuple(parts)
        self.devices = tuple(device for part in parts for device in part.devices)
        self.input_names = self.parts[0].input_names
        self.output_names = self.parts[-1].output_names

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = dict(feeds)
        outputs: dict[str, np.ndarray] = {}
        for part in self.parts:
            outputs = part.run(tensors)
            tensors.update(outputs)
        return outputs

    @property
    def modelled_seconds(self) -> float:
        return sum(part.modelled_seconds for part in self.parts)

    @property
    def sliced_layers(self) -> tuple[DevicePart, ...]:
        return tuple(part for part in self.parts if part.part.sliced is not None)

    def close(self) -> None:
        for part in self.parts:
            part.close()


class CpuStage:
    """A stage in an onnxruntime session on the host CPU."""

    timing = CPU

    def __init__(self, stage: Stage, path: Path, intra_op_threads: int | None = None) -> None:
        self.stage = stage
        self._session = make_session(path, intra_op_threads)
        self.input_names = tuple(item.name for item in self._session.get_inputs())
        self.output_names = tuple(item.name for item in self._session.get_outputs())

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            results = self._session.run(list(self.output_names), feeds)
        except Exception as error:  # onnxruntime raises untyped errors
            raise FpgaflowError(f"CPU stage {self.stage.name!r} failed: {error}") from None
        return dict(zip(self.output_names, results))

    def close(self) -> None:
        self._session = None


class ServiceExecutor:
    """A loaded service: ``predict_encoded`` for image bytes, ``predict_preprocessed`` for float batches.

    The service may have at most one FPGA stage. It runs on one emulated device when its weights fit
    one; otherwise it is split as the cluster splits it (:func:`~fpgaflow.fpga_runtime.placement.split.plan_split`)
    and its parts are chained over as many devices as it needs, at most ``max_devices`` (default: the
    ``server_devices`` setting, unset = no cap). ``on_timing(kind, seconds)`` is told the time each request
    spends in :data:`PREPROCESS`, :data:`FPGA` and :data:`CPU` work.
    """

    def __init__(
        self,
        service_dir: str | Path,
        device_profile: str | Path | None = None,
        *,
        intra_op_threads: int | None = None,
        max_batch_size: int | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        on_timing: TimingObserver | None = None,
        max_devices: int | None = None,
    ) -> None:
        settings = get_settings()
        self.directory = Path(service_dir)
        self.service: ServiceDefinition = load_service(self.directory)
        self.max_batch_size = max_batch_size or settings.server_max_batch_size
        self.max_image_pixels = max_image_pixels
        self.on_timing = on_timing
        fpga_stages = [stage.name for stage in self.service.stages if stage.target == "FPGA"]
        if len(fpga_stages) > 1:
            raise InvalidServiceDefinition(
                f"service {self.service.name!r} has {len(fpga_stages)} FPGA stages {fpga_stages}; a node's device holds one model"
            )
        first = self.service.stages[0]
        if len(first.inputs) != 1:
            raise InvalidServiceDefinition(
                f"the first stage {first.name!r} must take one input (the image batch), it takes {[t.name for t in first.inputs]}"
            )
        self.input_name = first.inputs[0].name
        if max_devices is not None and max_devices < 1:
            raise InvalidInput(f"a node needs at least one device, not {max_devices}")
        self.max_devices = max_devices or settings.server_devices
        self.profile: DeviceProfile | None = load_profile(device_profile or settings.device_profile) if fpga_stages else None
        self.device: EmulatedDevice | None = None
        self.stages: list[StageRunner] = []
        self._parts_dir: tempfile.TemporaryDirectory[str] | None = None
        try:
            for stage in self.service.stages:
                path = self.directory / stage.file
                if stage.target == "FPGA":
                    self.stages.append(self._fpga_stage(stage, path, intra_op_threads))
                else:
                    self.stages.append(CpuStage(stage, path, intra_op_threads))
                _check_graph_matches(self.stages[-1])
        except BaseException:
            self.close()
            raise

    def _fpga_stage(self, stage: Stage, path: Path, intra_op_threads: int | None) -> StageRunner:
        """The stage on one device when it fits one, else its split chained over several."""
        assert self.profile is not None  # set whenever the service has an FPGA stage
        try:
            runner = FpgaStage(stage, path, EmulatedDevice(self.profile, intra_op_threads))
        except ResourceExhausted:  # the weights do not fit one device (checked before anything is loaded)
            pass
        else:
            self.device = runner.device
            return runner
        self._parts_dir = tempfile.TemporaryDirectory(prefix="fpgaflow-parts-")
        plan, part_files = split_for_devices(
            path, stage.numeric_format, self.profile, Path(self._parts_dir.name), self.max_devices
        )
        parts: list[DevicePart] = []
        try:
            for part, files in zip(plan.parts_in_order, part_files):
                devices = [EmulatedDevice(self.profile, intra_op_threads) for _ in files]
                parts.append(DevicePart(part, files, devices, stage))
        except BaseException:
            for loaded in parts:
                loaded.close()
            raise
        self.device = parts[0].devices[0]
        return ChainedFpgaStage(stage, parts)

    @property
    def devices(self) -> tuple[EmulatedDevice, ...]:
        """The emulated devices this executor holds, in the order a request passes them."""
        return tuple(
            device for runner in self.stages if isinstance(runner, FpgaStage | ChainedFpgaStage) for device in runner.devices
        )

    def device_stats(self) -> DeviceStats | None:
        """Statistics of the device, or of the chain of devices taken as one; None without devices."""
        devices = self.devices
        if not devices:
            return None
        return replace(
            chain_stats([device.stats() for device in devices]), modelled_latency_seconds=self.modelled_latency_seconds
        )

    @property
    def modelled_latency_seconds(self) -> float:
        """Modelled device time of one image through the devices: parts in turn, a sliced layer's devices side by side."""
        return sum(runner.modelled_seconds for runner in self.stages if isinstance(runner, FpgaStage | ChainedFpgaStage))

    def describe(self) -> str:
        """What this executor serves on: ``serving digits v1 in fp32 over 4 × stratix10, modelled ...``."""
        service = self.service
        devices = self.devices
        if not devices:
            return f"serving {service.name} v{service.version} on the CPU"
        sliced = [
            f"layer {part.part.sliced.layer} cut by output columns over {part.part.sliced.slices} of them"
            for runner in self.stages
            if isinstance(runner, ChainedFpgaStage)
            for part in runner.sliced_layers
            if part.part.sliced is not None
        ]
        return (
            f"serving {service.name} v{service.version} in {service.numeric_format} over {len(devices)} × "
            f"{devices[0].profile.name}, modelled device latency {self.modelled_latency_seconds * 1e3:.3f} ms per image"
            + "".join(f"; {note}" for note in sliced)
        )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one preprocessed image (height, width, channels)."""
        return (self.service.input_size, self.service.input_size, 3)

    def predict_encoded(self, images: Sequence[bytes]) -> dict[str, np.ndarray]:
        """Encoded images (JPEG, PNG, BMP) → the last stage's outputs, batch first."""
        self._check_batch_size(len(images))
        started = time.perf_counter()
        batch = np.stack([self._preprocess_one(index, data) for index, data in enumerate(images)])
        self._observe(PREPROCESS, time.perf_counter() - started)
        return self._run_stages(batch)

    def predict_preprocessed(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """A float32 batch [N, H, W, 3] already preprocessed → the last stage's outputs."""
        batch = np.asarray(batch)
        if batch.dtype != np.float32:
            raise InvalidInput(f"preprocessed input must be float32, got {batch.dtype}")
        if batch.ndim != 4 or batch.shape[1:] != self.input_shape:
            expected = [-1, *self.input_shape]
            raise InvalidInput(f"preprocessed input must have shape {expected} (-1: batch), got {list(batch.shape)}")
        self._check_batch_size(batch.shape[0])
        return self._run_stages(batch)

    def close(self) -> None:
        """Release the device and the sessions."""
        for runner in self.stages:
            runner.close()
        self.stages = []
        parts_dir = getattr(self, "_parts_dir", None)
        if parts_dir is not None:
            parts_dir.cleanup()
            self._parts_dir = None

    def _preprocess_one(self, index: int, data: bytes) -> np.ndarray:
        try:
            return preprocess(data, self.service.preprocessing, self.max_image_pixels)
        except InvalidInput as error:
            raise InvalidInput(f"image {index}: {error}") from None

    def _check_batch_size(self, size: int) -> None:
        if size < 1:
            raise InvalidInput("the batch is empty: send at least one image")
        if size > self.max_batch_size:
            raise InvalidInput(f"batch of {size} exceeds the limit of {self.max_batch_size} per request")

    def _run_stages(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if not self.stages:
            raise FpgaflowError(f"service {self.service.name!r} is closed")
        tensors: dict[str, np.ndarray] = {self.input_name: batch}
        outputs: dict[str, np.ndarray] = {}
        for runner in self.stages:
            feeds = {spec.name: tensors[spec.name] for spec in runner.stage.inputs}
            started = time.perf_counter()
            outputs = runner.run(feeds)
            self._observe(runner.timing, time.perf_counter() - started)
            tensors.update(outputs)
        return outputs

    def _observe(self, kind: str, seconds: float) -> None:
        if self.on_timing is not None:
            self.on_timing(kind, seconds)


def _check_graph_matches(runner: StageRunner) -> None:
    """The ONNX graph must take exactly the inputs service.json declares and produce its outputs."""
    stage = runner.stage
    declared_inputs = {spec.name for spec in stage.inputs}
    declared_outputs = {spec.name for spec in stage.outputs}
    if declared_inputs != set(runner.input_names) or not declared_outputs <= set(runner.output_names):
        raise InvalidServiceDefinition(
            f"stage {stage.name!r}: {stage.file} takes {sorted(runner.input_names)} and produces "
            f"{sorted(runner.output_names)}, but service.json declares inputs {sorted(declared_inputs)} "
            f"and outputs {sorted(declared_outputs)}"
        )
