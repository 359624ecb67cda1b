"""The emulated FPGA device: one model at a time, weights must fit on chip, runs one request at a time.

The model's ONNX file is already prepared in its numeric format by the pipeline; the device checks
that the format is one it supports and that the weights, at that format's bits per weight, fit its
on-chip memory, then runs the graph in onnxruntime. Requests are serialised, as on the hardware,
and the time spent running them is recorded so utilisation (busy / wall time since load) can be
exported.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from fpgaflow.fpga_runtime.errors import FpgaflowError, InvalidInput, InvalidServiceDefinition, ModelNotReady
from fpgaflow.fpga_runtime.graph_format import check_declared
from fpgaflow.fpga_runtime.ort import make_session
from fpgaflow.fpga_runtime.placement.cost import CostReport
from fpgaflow.fpga_runtime.placement.fit import require_fits
from fpgaflow.fpga_runtime.profiles import DeviceProfile, load_profile

ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
}


@dataclass(frozen=True)
class LoadedModel:
    """Identity of the model a device holds."""

    path: Path
    numeric_format: str
    block_size: int
    sha256: str
    weight_bytes: int


@dataclass(frozen=True)
class DeviceStats:
    profile: str
    model: LoadedModel | None
    runs: int
    busy_seconds: float
    wall_seconds: float
    utilisation: float
    last_latency_seconds: float | None
    modelled_latency_seconds: float | None


@dataclass(frozen=True)
class DeviceInput:
    """An input of the loaded graph; None in ``shape`` is a free dimension (the batch)."""

    name: str
    dtype: type
    shape: tuple[int | None, ...]


def chain_stats(chain: list[DeviceStats]) -> DeviceStats:
    """The statistics of devices a request passes in turn, taken as one device.

    Runs are the first device's (each request runs once on every device), busy and measured times add
    up along the chain, utilisation is the devices' mean and the modelled latency is the chain's.
    """
    if len(chain) == 1:
        return chain[0]
    first = chain[0]
    wall = max(stats.wall_seconds for stats in chain)
    measured = [stats.last_latency_seconds for stats in chain]
    modelled = [stats.modelled_latency_seconds for stats in chain]
    return DeviceStats(
        profile=first.profile,
        model=first.model,
        runs=first.runs,
        busy_seconds=sum(stats.busy_seconds for stats in chain),
        wall_seconds=wall,
        utilisation=sum(stats.utilisation for stats in chain) / len(chain),
        last_latency_seconds=None if None in measured else sum(value for value in measured if value is not None),
        modelled_latency_seconds=None if None in modelled else sum(value for value in modelled if value is not None),
    )


def _read_graph(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except (OSError, DecodeError) as error:
        raise InvalidServiceDefinition(f"cannot read ONNX model {path}: {error}") from None


class EmulatedDevice:
    """One FPGA: ``load`` a model, ``run`` batches through it, read ``stats()``."""

    def __init__(self, profile: DeviceProfile | str | Path, intra_op_threads: int | None = None) -> None:
        self.profile = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
        self._intra_op_threads = intra_op_threads
        self._execution = threading.Lock()
        self._counters = threading.Lock()
        self._session = None
        self._inputs: tuple[DeviceInput, ...] = ()
        self._output_names: tuple[str, ...] = ()
        self._loaded: LoadedModel | None = None
        self._cost: CostReport | None = None
        self._last_latency: float | None = None
        self._reset_counters()

    def load(self, onnx_path: str | Path, numeric_format: str, block_size: int | None = None) -> LoadedModel:
        """Hold this model from now on, replacing the current one.

        Refused, leaving the current model in place: an unsupported numeric format (InvalidInput), a graph
        whose metadata names another format or block size than the one declared (InvalidServiceDefinition),
        or weights larger than the on-chip memory (ResourceExhausted).
        """
        path = Path(onnx_path)
        self.profile.require_format(numeric_format)
        model = _read_graph(path)
        block_size = check_declared(model, path.name, numeric_format, block_size)
        report = require_fits(model, numeric_format, self.profile, block_size, path.name)
        del model
        session = make_session(path, self._intra_op_threads)
        inputs = tuple(
            DeviceInput(
                name=item.name,
                dtype=ORT_DTYPES.get(item.type, np.float32),
                shape=tuple(dim if isinstance(dim, int) and dim > 0 else None for dim in item.shape),
            )
            for item in session.get_inputs()
        )
        loaded = LoadedModel(
            path=path.resolve(),
            numeric_format=numeric_format,
            block_size=report.graph.block_size,
            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            weight_bytes=report.graph.weight_bytes,
        )
        with self._execution:
            self._session = session
            self._inputs = inputs
            self._output_names = tuple(item.name for item in session.get_outputs())
            self._cost = report
            self._loaded = loaded
            self._reset_counters()
        return loaded

    def unload(self) -> None:
        """Drop the model; runs fail with ModelNotReady until the next load."""
        with self._execution:
            self._session = None
            self._inputs = ()
            self._output_names = ()
            self._cost = None
            self._loaded = None
            self._reset_counters()

    @property
    def loaded(self) -> LoadedModel | None:
        return self._loaded

    @property
    def inputs(self) -> tuple[DeviceInput, ...]:
        return self._inputs

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(item.name for item in self._inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._output_names

    @property
    def cost(self) -> CostReport:
        """Per-layer table, fit and modelled latency of the loaded model."""
        if self._cost is None:
            raise ModelNotReady(f"device {self.profile.name} holds no model")
        return self._cost

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the loaded model on one batch; one request at a time, like the hardware."""
        with self._execution:
            if self._session is None:
                raise ModelNotReady(f"device {self.profile.name} holds no model")
            arrays = self._checked(feeds)
            started = time.perf_counter()
            try:
                results = self._session.run(list(self._output_names), arrays)
            except Exception as error:  # onnxruntime raises untyped errors for what it refuses
                raise FpgaflowError(f"device {self.profile.name} failed to run {self._loaded.path.name}: {error}") from None
            elapsed = time.perf_counter() - started
        with self._counters:
            self._runs += 1
            self._busy_seconds += elapsed
            self._last_latency = elapsed
        return dict(zip(self._output_names, results))

    def stats(self) -> DeviceStats:
        """Runs, busy time and utilisation since the current model was loaded."""
        with self._counters:
            wall = time.perf_counter() - self._since
            loaded = self._loaded
            return DeviceStats(
                profile=self.profile.name,
                model=loaded,
                runs=self._runs,
                busy_seconds=self._busy_seconds,
                wall_seconds=wall,
                utilisation=min(1.0, self._busy_seconds / wall) if loaded is not None and wall > 0 else 0.0,
                last_latency_seconds=self._last_latency,
                modelled_latency_seconds=self._cost.latency.seconds if self._cost is not None else None,
            )

    def _reset_counters(self) -> None:
        with self._counters:
            self._since = time.perf_counter()
            self._runs = 0
            self._busy_seconds = 0.0
            self._last_latency = None

    def _checked(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        expected = {item.name for item in self._inputs}
        if set(feeds) != expected:
            raise InvalidInput(
                f"device inputs are {sorted(expected)}; got {sorted(feeds)}"
                + (f" (missing {sorted(expected - set(feeds))})" if expected - set(feeds) else "")
            )
        arrays = {}
        for item in self._inputs:
            array = np.asarray(feeds[item.name])
            if array.dtype != item.dtype:
                raise InvalidInput(f"input {item.name!r} must be {np.dtype(item.dtype).name}, got {array.dtype.name}")
            if array.ndim != len(item.shape) or any(
                want is not None and want != got for want, got in zip(item.shape, array.shape)
            ):
                wanted = tuple(-1 if dim is None else dim for dim in item.shape)
                raise InvalidInput(f"input {item.name!r} must have shape {wanted} (-1: any), got {array.shape}")
            arrays[item.name] = np.ascontiguousarray(array)
        return arrays
