"""The step tasks of each kind of model, so `train_and_deploy` runs one sequence for classifiers and detectors.

A classifier (resnet50, resnet152, densenet121, vgg16) and the detector (ssd_vgg) differ in how
their data is read, trained, converted, gated, packaged and smoke-tested; every other step
(MLflow run, lineage, publication, image build, deployment) is shared. Each kind's tasks take the
same arguments, so the flow only picks the kind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prefect import Task

from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.conversion.onnx_stages import convert_stages_task
from fpgaflow.tasks.data.intake import load_splits, validate_data
from fpgaflow.tasks.numerics.steps import evaluate_numerics_task
from fpgaflow.tasks.packaging.service_dir import package_service_task
from fpgaflow.tasks.registry.versions import register_trained_model_task
from fpgaflow.tasks.operations.scoring import split_images
from fpgaflow.tasks.deployment.smoke import smoke_test_task
from fpgaflow.tasks.conversion.detector_stages import convert_detector_stages_task
from fpgaflow.tasks.data.detection_intake import load_detection_splits, split_image_paths, validate_detection_data
from fpgaflow.tasks.numerics.detector_steps import evaluate_detector_numerics_task
from fpgaflow.tasks.packaging.detector_service import package_detector_task
from fpgaflow.tasks.registry.detector_versions import register_trained_detector_task
from fpgaflow.tasks.deployment.detector_smoke import detection_smoke_test_task
from fpgaflow.tasks.training.detector_steps import detection_train_step_task
from fpgaflow.tasks.training.steps import train_step_task

@dataclass(frozen=True)
class ModelKind:
    validate: Task
    load_splits: Callable
    train: Task
    register: Task
    convert: Task
    numerics: Task
    package: Task
    smoke_test: Task
    smoke_images: Callable[[Path], Sequence]  # the split manifest -> the held-out images the smoke test sends


CLASSIFIER = ModelKind(
    validate=validate_data, load_splits=load_splits, train=train_step_task,
    register=register_trained_model_task, convert=convert_stages_task, numerics=evaluate_numerics_task,
    package=package_service_task, smoke_test=smoke_test_task, smoke_images=split_images,
)
DETECTOR = ModelKind(
    validate=validate_detection_data, load_splits=load_detection_splits, train=detection_train_step_task,
    register=register_trained_detector_task, convert=convert_detector_stages_task, numerics=evaluate_detector_numerics_task,
    package=package_detector_task, smoke_test=detection_smoke_test_task, smoke_images=split_image_paths,
)


def model_kind(config: PipelineConfig) -> ModelKind:
    return DETECTOR if config.detects else CLASSIFIER
