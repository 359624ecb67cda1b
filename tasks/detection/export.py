"""The trained detector as files the later steps convert and package.

A detector directory holds ``fpga_stage.keras`` (``input`` → the head tensors), ``cpu_stage.onnx``
(head tensors → ``boxes``, ``scores``, ``classes``, ``num_detections``; already ONNX: it is
built, not converted), ``class_names.json`` (in class-index order), ``detector.json``
(:class:`~fpgaflow.tasks.detection.model.DetectorInfo`) and ``detection.json`` (the decoding and NMS settings the
CPU stage was built with). Written atomically: a reader sees the old directory or the new one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import keras

from fpgaflow.tasks.config import DetectionConfig
from fpgaflow.tasks.detection.geometry import DetectorInfo
from fpgaflow.tasks.detection.model import Detector
from fpgaflow.tasks.detection.postprocess import write_postprocess
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.files import replace_directory_atomic
from fpgaflow.tasks.training.export import ModelFiles

CPU_STAGE_FILE = "cpu_stage.onnx"
DETECTOR_FILE = "detector.json"
DETECTION_CONFIG_FILE = "detection.json"


@dataclass(frozen=True)
class DetectorFiles(ModelFiles):
    """A detector's exported files: its CPU stage is ONNX already, its facts are the detector's, plus its decoding settings."""

    cpu_stage_file: ClassVar[str] = CPU_STAGE_FILE

    @property
    def featurizer(self) -> Path:
        """The detector's facts (named like the classifier's featurizer facts, for the steps that read both)."""
        return self.directory / DETECTOR_FILE

    @property
    def detection_config(self) -> Path:
        return self.directory / DETECTION_CONFIG_FILE


@dataclass
class ExportedDetector:
    detector: Detector
    cpu_stage: Path
    class_names: list[str]
    detection: DetectionConfig


def export_detector(detector: Detector, class_names: Sequence[str], detection: DetectionConfig, directory: Path) -> DetectorFiles:
    """Write the FPGA stage, the CPU stage built for ``detection``, the class names and the facts into ``directory``."""
    if len(class_names) != detector.info.num_classes:
        raise PipelineStepError(
            f"the detector scores {detector.info.num_classes} classes but {len(class_names)} class names were given"
        )

    def write(staging: Path) -> None:
        files = DetectorFiles(staging)
        detector.model.save(files.fpga_stage)
        write_postprocess(detector.info, detection, files.cpu_stage)
        files.class_names.write_text(json.dumps(list(class_names), indent=1) + "\n")
        files.featurizer.write_text(detector.info.model_dump_json(indent=2) + "\n")
        files.detection_config.write_text(detection.model_dump_json(indent=2) + "\n")

    return DetectorFiles(replace_directory_atomic(write, Path(directory)))


def load_detector(directory: Path) -> ExportedDetector:
    """Read a directory written by :func:`export_detector`; a missing file is named in the error."""
    files = DetectorFiles(Path(directory))
    required = (files.fpga_stage, files.cpu_stage, files.class_names, files.featurizer, files.detection_config)
    missing = [path.name for path in required if not path.is_file()]
    if missing:
        raise PipelineStepError(f"{directory} is not an exported detector: missing {missing}")
    info = DetectorInfo.model_validate_json(files.featurizer.read_text())
    return ExportedDetector(
        detector=Detector(keras.models.load_model(files.fpga_stage, compile=False), info),
        cpu_stage=files.cpu_stage,
        class_names=json.loads(files.class_names.read_text()),
        detection=DetectionConfig.model_validate_json(files.detection_config.read_text()),
    )
