"""The package step: write the service definition directory a node loads.

A service directory holds ``service.json`` (:class:`fpgaflow.fpga_runtime.service.ServiceDefinition`)
plus the ONNX file of each stage. It is built in a hidden sibling directory, validated with
:func:`fpgaflow.fpga_runtime.service.load_service`, then renamed into place, so a reader never sees a
partial service directory; a failure leaves the previous one (or none) untouched.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import onnx

from fpgaflow.fpga_runtime.errors import InvalidServiceDefinition
from fpgaflow.fpga_runtime.graph_format import check_declared
from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.fpga_runtime.service import ServiceDefinition, Stage, TensorNames, TensorSpec, check_name, load_service
from fpgaflow.tasks.conversion.onnx_stages import CPU_STAGE_FILE, FPGA_STAGE_FILE, PROBABILITIES
from fpgaflow.tasks.files import replace_directory_atomic
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

TensorDType = Literal["float32", "int64", "int32", "string"]
StageTarget = Literal["FPGA", "CPU"]
ServiceTask = Literal["classification", "detection"]

ONNX_DTYPES: dict[int, TensorDType] = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.STRING: "string",
}


def default_service_dir(name: str, version: str, settings: PipelineSettings | None = None) -> Path:
    settings = settings or get_pipeline_settings()
    return settings.home / "services" / check_name(name, "model name") / check_name(str(version), "model version")


def tensor_specs(values: Sequence[onnx.ValueInfoProto], path: Path) -> tuple[TensorSpec, ...]:
    specs = []
    for value in values:
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type not in ONNX_DTYPES:
            raise InvalidServiceDefinition(
                f"{path.name}: tensor {value.name!r} has ONNX element type {tensor_type.elem_type}, "
                f"supported: {sorted(ONNX_DTYPES.values())}"
            )
        shape = tuple(dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor_type.shape.dim)
        specs.append(TensorSpec(name=value.name, shape=shape, dtype=ONNX_DTYPES[tensor_type.elem_type]))
    return tuple(specs)


def stage_from_onnx(name: str, target: StageTarget, path: Path, numeric_format: str, file: str) -> Stage:
    """A stage whose input/output specs are read from the ONNX graph itself."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError/OSError variants for a broken file
        raise InvalidServiceDefinition(f"{path.name} is not a readable ONNX model: {error}") from None
    graph = model.graph
    initializers = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    return Stage(
        name=name,
        target=target,
        file=file,
        numeric_format=numeric_format,
        block_size=check_declared(model, path.name, numeric_format),
        inputs=tensor_specs(inputs, path),
        outputs=tensor_specs(graph.output, path),
    )


def check_fit(service: ServiceDefinition) -> None:
    """What the schema cannot see on its own: the input fits the preprocessing, the classes fit the output."""
    first_input = service.stages[0].inputs[0]
    expected = (service.input_size, service.input_size, 3)
    if tuple(first_input.shape[1:]) != expected:
        raise InvalidServiceDefinition(
            f"stage {service.stages[0].name!r} takes {first_input.name!r} of shape {first_input.shape}, "
            f"but the preprocessing produces images of shape {expected}"
        )
    if service.task == "classification":
        output = next(tensor for tensor in service.outputs if tensor.name == service.default_output)
        if output.shape[-1] != len(service.class_names):
            raise InvalidServiceDefinition(
                f"output {output.name!r} has {output.shape[-1]} scores per image but there are "
                f"{len(service.class_names)} class names"
            )


def write_service(
    directory: Path,
    *,
    name: str,
    version: str,
    class_names: Sequence[str],
    preprocessing: PreprocessSpec,
    numeric_format: str,
    fpga_onnx: Path,
    cpu_onnx: Path,
    source: Mapping[str, str],
    task_kind: ServiceTask = "classification",
    default_output: str = PROBABILITIES,
    tensor_names: TensorNames | None = None,
) -> ServiceDefinition:
    """Copy the stage files into ``directory`` and write ``service.json`` describing them."""
    shutil.copyfile(fpga_onnx, directory / FPGA_STAGE_FILE)
    shutil.copyfile(cpu_onnx, directory / CPU_STAGE_FILE)
    service = ServiceDefinition(
        name=name,
        version=str(version),
        task=task_kind,
        class_names=tuple(class_names),
        preprocessing=preprocessing,
        numeric_format=numeric_format,
        stages=(
            stage_from_onnx("featurizer", "FPGA", directory / FPGA_STAGE_FILE, numeric_format, FPGA_STAGE_FILE),
            stage_from_onnx("classifier", "CPU", directory / CPU_STAGE_FILE, "fp32", CPU_STAGE_FILE),
        ),
        default_output=default_output,
        tensor_names=tensor_names or TensorNames(),
        source=dict(source),
    )
    check_fit(service)
    service.save(directory)
    return service


def package_service(
    *,
    name: str,
    version: str,
    class_names: Sequence[str],
    preprocessing: PreprocessSpec,
    numeric_format: str,
    fpga_onnx: Path,
    cpu_onnx: Path,
    source: Mapping[str, str],
    destination: Path | None = None,
    task_kind: ServiceTask = "classification",
    default_output: str = PROBABILITIES,
    tensor_names: TensorNames | None = None,
    settings: PipelineSettings | None = None,
) -> Path:
    """Build, validate and atomically place the service directory; returns its path.

    Default location: ``<home>/services/<name>/<version>``. A retried step replaces the
    directory it wrote before.
    """
    for path in (fpga_onnx, cpu_onnx):
        if not Path(path).is_file():
            raise FileNotFoundError(f"cannot package {name} version {version}: stage file {path} does not exist")
    destination = Path(destination) if destination else default_service_dir(name, str(version), settings)

    def build(directory: Path) -> None:
        write_service(
            directory,
            name=name,
            version=version,
            class_names=class_names,
            preprocessing=preprocessing,
            numeric_format=numeric_format,
            fpga_onnx=Path(fpga_onnx),
            cpu_onnx=Path(cpu_onnx),
            source=source,
            task_kind=task_kind,
            default_output=default_output,
            tensor_names=tensor_names,
        )
        load_service(directory)
        directory.chmod(0o755)

    return replace_directory_atomic(build, destination)
