"""The trained model as files the later steps convert: both stages as ``.keras``, the class names, the
featurizer's facts (with the preprocessing spec the server must reproduce).

A model directory holds ``fpga_stage.keras`` (``input`` → ``features``), ``cpu_stage.keras``
(``features`` → ``probabilities``), ``class_names.json`` (in output order) and ``featurizer.json``
(:class:`~fpgaflow.tasks.featurizers.catalog.FeaturizerInfo`). It is written atomically: a reader sees the old one or
the complete new one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import keras

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.featurizers.catalog import Featurizer, FeaturizerInfo
from fpgaflow.tasks.files import replace_directory_atomic

FPGA_STAGE_FILE = "fpga_stage.keras"
CPU_STAGE_FILE = "cpu_stage.keras"
CLASS_NAMES_FILE = "class_names.json"
FEATURIZER_FILE = "featurizer.json"


@dataclass(frozen=True)
class ModelFiles:
    """The exported files of a model: its two stages, its class names and its featurizer's facts."""

    directory: Path
    cpu_stage_file: ClassVar[str] = CPU_STAGE_FILE

    @property
    def fpga_stage(self) -> Path:
        return self.directory / FPGA_STAGE_FILE

    @property
    def cpu_stage(self) -> Path:
        return self.directory / self.cpu_stage_file

    @property
    def class_names(self) -> Path:
        return self.directory / CLASS_NAMES_FILE

    @property
    def featurizer(self) -> Path:
        return self.directory / FEATURIZER_FILE


@dataclass
class ExportedModel:
    fpga_stage: keras.Model
    cpu_stage: keras.Model
    class_names: list[str]
    featurizer: FeaturizerInfo

    @property
    def preprocessing(self) -> PreprocessSpec:
        return self.featurizer.preprocessing


def export_model(featurizer: Featurizer, head: keras.Model, class_names: Sequence[str], directory: Path) -> ModelFiles:
    """Write both stages, the class names and the featurizer facts into ``directory`` (replaced whole)."""
    classes = int(head.outputs[0].shape[-1])
    if classes != len(class_names):
        raise PipelineStepError(f"the head outputs {classes} classes but {len(class_names)} class names were given")
    if int(head.inputs[0].shape[-1]) != featurizer.info.feature_dim:
        raise PipelineStepError(
            f"the head takes {head.inputs[0].shape[-1]} features, "
            f"featurizer {featurizer.info.name} gives {featurizer.info.feature_dim}"
        )

    def write(staging: Path) -> None:
        files = ModelFiles(staging)
        featurizer.model.save(files.fpga_stage)
        head.save(files.cpu_stage)
        files.class_names.write_text(json.dumps(list(class_names), indent=1) + "\n")
        files.featurizer.write_text(featurizer.info.model_dump_json(indent=2) + "\n")

    return ModelFiles(replace_directory_atomic(write, Path(directory)))


def load_model(directory: Path) -> ExportedModel:
    """Read a model directory written by :func:`export_model`; a missing file is named in the error."""
    files = ModelFiles(Path(directory))
    missing = [
        path.name for path in (files.fpga_stage, files.cpu_stage, files.class_names, files.featurizer) if not path.is_file()
    ]
    if missing:
        raise PipelineStepError(f"{directory} is not an exported model: missing {missing}")
    return ExportedModel(
        fpga_stage=keras.models.load_model(files.fpga_stage, compile=False),
        cpu_stage=keras.models.load_model(files.cpu_stage, compile=False),
        class_names=json.loads(files.class_names.read_text()),
        featurizer=FeaturizerInfo.model_validate_json(files.featurizer.read_text()),
    )
