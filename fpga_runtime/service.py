"""The service definition: the deployable unit a node loads.

A service directory holds ``service.json`` (schema below) and the ONNX files its stages name.
It is written by the pipeline's package step and read, validated, by every node.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fpgaflow.fpga_runtime.errors import InvalidServiceDefinition
from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.fpga_runtime.protocol import (
    CLASS_NAMES_OUTPUT,
    CLASSES_OUTPUT,
    DETECTION_OUTPUTS,
    ENCODED_INPUT_TENSOR,
    IMAGES_INPUT,
    PREPROCESSED_INPUT,
    TENSOR_INDEX_SUFFIX,
)

SERVICE_FILE = "service.json"
SCHEMA_VERSION: Literal[1] = 1
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
TENSOR_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]*:[0-9]+$")


def check_name(value: str, what: str = "name") -> str:
    """Model and service names: letters, digits, '.', '_', '-'; never a path."""
    if not isinstance(value, str) or not NAME_PATTERN.match(value) or ".." in value:
        raise ValueError(f"invalid {what} {value!r}: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    shape: tuple[int, ...] = Field(description="-1 marks a free dimension (the batch).")
    dtype: Literal["float32", "int64", "int32", "string"] = "float32"


def _check_tensor_name(value: str) -> str:
    if not TENSOR_NAME_PATTERN.match(value):
        raise ValueError(f"tensor name {value!r} must look like a TensorFlow tensor name: 'scope/op:0'")
    return value


class TensorNames(BaseModel):
    """TensorFlow-style tensor names (``scope/op:0``) that requests may use instead of the plain names.

    The original service's users named the model's input and output by such names
    (``input_tensors``, ``output_tensors``); the pipeline records them here and prints them at
    registration.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str = Field(default=ENCODED_INPUT_TENSOR, description=f"Tensor name of the encoded-images input {IMAGES_INPUT!r}.")
    outputs: dict[str, str] = Field(
        default_factory=dict,
        description="Output → tensor name, for the outputs of the default answer in order; any other output X is 'X:0'.",
    )

    @field_validator("input")
    @classmethod
    def _valid_input(cls, value: str) -> str:
        return _check_tensor_name(value)

    @field_validator("outputs")
    @classmethod
    def _valid_outputs(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value.values():
            _check_tensor_name(name)
        return value

    def of_input(self, name: str) -> str:
        return self.input if name == IMAGES_INPUT else name + TENSOR_INDEX_SUFFIX

    def of_output(self, name: str) -> str:
        return self.outputs.get(name, name + TENSOR_INDEX_SUFFIX)

    @property
    def input_tensors(self) -> str:
        """What a client passes as ``input_name`` to send encoded images."""
        return self.input

    @property
    def output_tensors(self) -> str | list[str]:
        """What a client passes as ``outputs`` for the default answer: one name, or a list of several."""
        names = list(self.outputs.values())
        return names[0] if len(names) == 1 else names

    def client_names(self) -> dict[str, str | list[str]]:
        """``input_tensors`` and ``output_tensors``, as registration prints them."""
        return {"input_tensors": self.input_tensors, "output_tensors": self.output_tensors}


class Stage(BaseModel):
    """One ONNX graph, run on a device (target FPGA) or on the host CPU."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    target: Literal["FPGA", "CPU"]
    file: str = Field(description="ONNX file, relative to the service directory.")
    numeric_format: str = Field(default="fp32", description="Numeric format the graph was prepared in.")
    block_size: int | None = Field(
        default=None, ge=1, description="Values sharing one exponent (block floating point); None = as the graph says."
    )
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @field_validator("file")
    @classmethod
    def _inside_directory(cls, value: str) -> str:
        path = Path(value)
        if path.is_absolute() or ".." in path.parts or not value.endswith(".onnx"):
            raise ValueError(f"stage file {value!r} must be a relative .onnx path inside the service directory")
        return value


class ServiceDefinition(BaseModel):
    """``service.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str
    version: str
    task: Literal["classification", "detection"] = "classification"
    class_names: tuple[str, ...]
    preprocessing: PreprocessSpec
    numeric_format: str = Field(description="Numeric format of the FPGA stages.")
    stages: tuple[Stage, ...] = Field(
        min_length=1, description="Run in order; each stage's inputs are the previous stage's outputs."
    )
    default_output: str = Field(description="Output returned when a request names none.")
    tensor_names: TensorNames = Field(
        default_factory=TensorNames,
        description="TensorFlow-style names of the input and outputs, accepted beside the plain ones.",
    )
    source: dict[str, str] = Field(default_factory=dict, description="Lineage: MLflow run, dataset fingerprint, ...")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_name(value, "service name")

    @model_validator(mode="after")
    def _stages_chain(self) -> ServiceDefinition:
        for before, after in zip(self.stages, self.stages[1:]):
            produced = {tensor.name for tensor in before.outputs}
            needed = {tensor.name for tensor in after.inputs}
            if not needed <= produced:
                raise ValueError(
                    f"stage {after.name!r} needs inputs {sorted(needed - produced)} that stage {before.name!r} does not produce"
                )
        outputs = {tensor.name for tensor in self.stages[-1].outputs}
        if self.default_output not in outputs:
            raise ValueError(f"default_output {self.default_output!r} is not an output of the last stage {sorted(outputs)}")
        missing = [name for name in DETECTION_OUTPUTS if name not in outputs]
        if self.task == "detection" and missing:
            raise ValueError(f"a detection service's last stage must output {list(DETECTION_OUTPUTS)}; it lacks {missing}")
        named = [name for name in self.tensor_names.outputs if name not in outputs]
        if named:
            raise ValueError(f"tensor_names.outputs names {named}, which are not outputs of the last stage {sorted(outputs)}")
        tensors = [self.tensor_names.input, *self.tensor_names.outputs.values()]
        repeated = sorted({name for name in tensors if tensors.count(name) > 1})
        if repeated:
            raise ValueError(f"tensor_names gives {repeated} to more than one tensor")
        recorded = {IMAGES_INPUT: self.tensor_names.input, **self.tensor_names.outputs}
        plain = {IMAGES_INPUT, PREPROCESSED_INPUT, *outputs, CLASSES_OUTPUT, CLASS_NAMES_OUTPUT}
        taken = {name: other for other in plain for name in (other, other + TENSOR_INDEX_SUFFIX)}
        clashing = sorted(tensor for owner, tensor in recorded.items() if taken.get(tensor, owner) != owner)
        if clashing:
            raise ValueError(f"tensor_names {clashing} already name other inputs or outputs (a plain name or its ':0')")
        return self

    @property
    def input_size(self) -> int:
        return self.preprocessing.crop

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.stages[-1].outputs

    def save(self, directory: Path) -> Path:
        path = Path(directory) / SERVICE_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path


def load_service(directory: str | Path) -> ServiceDefinition:
    """Read and validate a service directory; every problem is named in the error."""
    directory = Path(directory)
    path = directory / SERVICE_FILE
    if not path.is_file():
        raise InvalidServiceDefinition(f"{directory} is not a service directory: {SERVICE_FILE} is missing")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InvalidServiceDefinition(f"{path} is not valid JSON: {error}") from None
    try:
        service = ServiceDefinition.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '(top level)'}: {item['msg']}" for item in error.errors()
        )
        raise InvalidServiceDefinition(f"{path} does not match the service schema: {problems}") from None
    missing = [stage.file for stage in service.stages if not (directory / stage.file).is_file()]
    if missing:
        raise InvalidServiceDefinition(f"{path} names ONNX files that are not in {directory}: {missing}")
    return service
