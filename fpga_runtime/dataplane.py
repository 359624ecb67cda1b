"""The one core both gRPC APIs call: model repository, readiness, metadata and ``infer``.

The TF Serving and Open Inference Protocol servicers only convert messages and call this; every
problem is raised as an error of :mod:`fpgaflow.fpga_runtime.errors`, which carries its gRPC status.
Input and output names: :mod:`fpgaflow.fpga_runtime.protocol`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

import numpy as np

from fpgaflow.fpga_runtime.codec import STRING
from fpgaflow.fpga_runtime.device import DeviceStats
from fpgaflow.fpga_runtime.errors import FpgaflowError, InvalidInput, ModelNotFound, ModelNotReady
from fpgaflow.fpga_runtime.executor import ServiceExecutor, TimingObserver
from fpgaflow.fpga_runtime.protocol import CLASS_NAMES_OUTPUT, CLASSES_OUTPUT, DETECTION_OUTPUTS, IMAGES_INPUT, PREPROCESSED_INPUT
from fpgaflow.fpga_runtime.service import ServiceDefinition, TensorSpec, load_service

PLATFORM = "fpgaflow_onnx"


class ModelState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    version: str
    versions: tuple[str, ...]
    platform: str
    task: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    default_output: str
    class_names: tuple[str, ...]
    input_tensor_names: Mapping[str, str]  # plain input name → its TensorFlow-style tensor name
    output_tensor_names: Mapping[str, str]  # plain output name → its TensorFlow-style tensor name


@dataclass
class ModelEntry:
    service: ServiceDefinition
    state: ModelState = ModelState.LOADING
    executor: ServiceExecutor | None = None
    error: str = ""
    metadata: ModelMetadata = field(init=False)

    def __post_init__(self) -> None:
        self.metadata = _metadata_of(self.service)


def _metadata_of(service: ServiceDefinition) -> ModelMetadata:
    size = service.input_size
    inputs = (
        TensorSpec(name=IMAGES_INPUT, shape=(-1,), dtype="string"),
        TensorSpec(name=PREPROCESSED_INPUT, shape=(-1, size, size, 3), dtype="float32"),
    )
    outputs = list(service.outputs)
    declared = {spec.name for spec in outputs}
    if service.task == "classification":
        derived = (
            TensorSpec(name=CLASSES_OUTPUT, shape=(-1,), dtype="int64"),
            TensorSpec(name=CLASS_NAMES_OUTPUT, shape=(-1,), dtype="string"),
        )
        outputs.extend(spec for spec in derived if spec.name not in declared)
    return ModelMetadata(
        name=service.name,
        version=service.version,
        versions=(service.version,),
        platform=PLATFORM,
        task=service.task,
        inputs=inputs,
        outputs=tuple(outputs),
        default_output=service.default_output,
        class_names=service.class_names,
        input_tensor_names={spec.name: service.tensor_names.of_input(spec.name) for spec in inputs},
        output_tensor_names={spec.name: service.tensor_names.of_output(spec.name) for spec in outputs},
    )


class DataPlane:
    """Models by name and version; a model is registered (loading), then ready or failed."""

    def __init__(self, on_timing: Callable[[str, str], TimingObserver] | None = None) -> None:
        """``on_timing(model, version)`` gives the per-stage timing observer of a model's executor."""
        self._models: dict[tuple[str, str], ModelEntry] = {}
        self._lock = threading.Lock()
        self._on_timing = on_timing
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every change of the repository (register, attach, failure, close)."""
        self._listeners.append(listener)
        listener()

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    # -- repository ------------------------------------------------------------------------------

    def register(self, service: ServiceDefinition) -> None:
        """Announce a model: it is known (metadata, NOT ready) until :meth:`attach`."""
        with self._lock:
            self._models[(service.name, service.version)] = ModelEntry(service)
        self._changed()

    def attach(self, executor: ServiceExecutor) -> None:
        """A loaded executor makes its model ready."""
        service = executor.service
        with self._lock:
            entry = self._models.setdefault((service.name, service.version), ModelEntry(service))
            entry.executor, entry.state, entry.error = executor, ModelState.READY, ""
        self._changed()

    def mark_failed(self, service: ServiceDefinition, error: BaseException) -> None:
        with self._lock:
            entry = self._models.setdefault((service.name, service.version), ModelEntry(service))
            entry.state, entry.error = ModelState.FAILED, str(error)
        self._changed()

    def load(self, service_dir: str | Path, device_profile: str | Path | None = None, **executor_options) -> ServiceExecutor:
        """Register, load and attach the service in ``service_dir``; a failure marks it failed and is raised."""
        service = load_service(service_dir)
        self.register(service)
        try:
            executor = ServiceExecutor(service_dir, device_profile, on_timing=self._timing_observer(service), **executor_options)
        except BaseException as error:
            self.mark_failed(service, error)
            raise
        self.attach(executor)
        return executor

    def close(self) -> None:
        """Unload every model (devices released)."""
        with self._lock:
            entries = list(self._models.values())
            self._models.clear()
        self._changed()
        for entry in entries:
            if entry.executor is not None:
                entry.executor.close()

    def _timing_observer(self, service: ServiceDefinition) -> TimingObserver | None:
        return self._on_timing(service.name, service.version) if self._on_timing else None

    # -- queries ---------------------------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Every registered model is loaded (and there is at least one)."""
        with self._lock:
            entries = list(self._models.values())
        return bool(entries) and all(entry.state is ModelState.READY for entry in entries)

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted({name for name, _ in self._models})

    def resolve(self, name: str, version: str = "") -> ModelEntry:
        """The entry for a name and version; empty version = the newest; empty name = the only model."""
        with self._lock:
            entries = list(self._models.values())
        if not name:
            names = {entry.service.name for entry in entries}
            if len(names) != 1:
                raise ModelNotFound(f"name the model: this server holds {sorted(names) or 'no models'}")
            (name,) = names
        candidates = [entry for entry in entries if entry.service.name == name]
        if not candidates:
            known = sorted({entry.service.name for entry in entries})
            raise ModelNotFound(f"model {name!r} is not served here; models: {known}")
        if not version:
            return max(candidates, key=lambda entry: _version_key(entry.service.version))
        for entry in candidates:
            if entry.service.version == version:
                return entry
        versions = sorted((entry.service.version for entry in candidates), key=_version_key)
        raise ModelNotFound(f"model {name!r} has no version {version!r}; versions: {versions}")

    def model_ready(self, name: str, version: str = "") -> bool:
        return self.resolve(name, version).state is ModelState.READY

    def metadata(self, name: str, version: str = "") -> ModelMetadata:
        """The model's metadata; ``versions`` lists every version of it this server holds."""
        entry = self.resolve(name, version)
        with self._lock:
            versions = [key_version for key_name, key_version in self._models if key_name == entry.service.name]
        return replace(entry.metadata, versions=tuple(sorted(versions, key=_version_key)))

    def device_stats(self) -> list[tuple[str, str, DeviceStats]]:
        """(model, version, stats) of every loaded model that runs on a device."""
        with self._lock:
            entries = list(self._models.values())
        found = [(entry.service, entry.executor.device_stats()) for entry in entries if entry.executor is not None]
        return [(service.name, service.version, stats) for service, stats in found if stats is not None]

    def executors(self) -> list[ServiceExecutor]:
        """The executors of every loaded model."""
        with self._lock:
            return [entry.executor for entry in self._models.values() if entry.executor is not None]

    # -- inference -------------------------------------------------------------------------------

    def infer(
        self,
        name: str,
        version: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run one request; ``outputs`` names what to return (None or empty: the default output).

        Inputs and outputs may be named plainly or by their tensor names; outputs come back under
        the names they were asked by.
        """
        entry = self.resolve(name, version)
        metadata = entry.metadata
        plain_input = _plain_input(list(inputs), metadata)
        wanted = list(dict.fromkeys(outputs or default_outputs(entry.service)))
        plain_outputs = _plain_outputs(wanted, metadata)
        if entry.state is ModelState.FAILED:
            raise FpgaflowError(f"model {entry.service.name!r} version {entry.service.version} failed to load: {entry.error}")
        executor = entry.executor
        if entry.state is not ModelState.READY or executor is None:
            raise ModelNotReady(f"model {entry.service.name!r} version {entry.service.version} is still loading")
        ((given, array),) = inputs.items()
        results = _run(executor, plain_input, given, array)
        if entry.service.task == "classification":
            scores = results[entry.service.default_output]
            top = scores.reshape(scores.shape[0], -1).argmax(axis=1).astype(np.int64)
            results.setdefault(CLASSES_OUTPUT, top)
            names = np.empty(top.shape, dtype=STRING)
            names[:] = [entry.service.class_names[index].encode("utf-8") for index in top]
            results.setdefault(CLASS_NAMES_OUTPUT, names)
        return {output: results[plain_outputs[output]] for output in wanted}


def default_outputs(service: ServiceDefinition) -> list[str]:
    """What a request naming no outputs gets: a classifier's default output, a detector's four detection outputs."""
    return list(DETECTION_OUTPUTS) if service.task == "detection" else [service.default_output]


def _by_tensor_name(names: Mapping[str, str]) -> dict[str, str]:
    """Every accepted name (plain or tensor name) → the plain name."""
    return {**{tensor: plain for plain, tensor in names.items()}, **{plain: plain for plain in names}}


def _known(names: Mapping[str, str]) -> str:
    return ", ".join(f"{plain!r} or {tensor!r}" for plain, tensor in names.items())


def _plain_outputs(wanted: Sequence[str], metadata: ModelMetadata) -> dict[str, str]:
    """Each requested output → its plain name; an unknown one is refused, naming every known name."""
    accepted = _by_tensor_name(metadata.output_tensor_names)
    unknown = [output for output in wanted if output not in accepted]
    if unknown:
        raise InvalidInput(
            f"unknown outputs {unknown} of model {metadata.name!r}; outputs: {list(metadata.output_tensor_names)} "
            f"(by name or tensor name: {_known(metadata.output_tensor_names)})"
        )
    return {output: accepted[output] for output in wanted}


def _plain_input(given: Sequence[str], metadata: ModelMetadata) -> str:
    """The plain name of the one given input; anything else is refused, naming both inputs by both their names."""
    accepted = _by_tensor_name(metadata.input_tensor_names)
    if len(given) != 1 or given[0] not in accepted:
        names = metadata.input_tensor_names
        raise InvalidInput(
            f"give exactly one input, {IMAGES_INPUT!r} or {names[IMAGES_INPUT]!r} (encoded images) or "
            f"{PREPROCESSED_INPUT!r} or {names[PREPROCESSED_INPUT]!r} (preprocessed float32 [N, H, W, 3]); got {sorted(given)}"
        )
    return accepted[given[0]]


def _run(executor: ServiceExecutor, plain: str, given: str, array: np.ndarray) -> dict[str, np.ndarray]:
    """Run the one input ``given`` (plain name ``plain``) through the executor."""
    if plain == PREPROCESSED_INPUT:
        return executor.predict_preprocessed(array)
    if array.dtype != STRING:
        raise InvalidInput(f"input {given!r} must hold encoded images as strings (DT_STRING / BYTES), got {array.dtype}")
    if array.ndim != 1:
        raise InvalidInput(f"input {given!r} must be a 1-D batch of encoded images [N], got shape {list(array.shape)}")
    return executor.predict_encoded(list(array))


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)
