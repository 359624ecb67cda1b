"""The model kind: what a stage's step may ask of a classifier or a detector, as one record of facts and functions.

The steps know a kind only through this record, so no stage imports a kind at run time."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
    from fpgaflow.fpga_runtime.service import TensorNames
    from fpgaflow.tasks.config import PipelineConfig
    from fpgaflow.tasks.conversion.onnx_stages import ConversionReport
    from fpgaflow.tasks.data.intake import IntakeResult
    from fpgaflow.tasks.deployment.smoke import SmokeResult
    from fpgaflow.tasks.detection.smoke import DetectionSmokeResult
    from fpgaflow.tasks.detection.train_step import DetectionTrainingOutcome
    from fpgaflow.tasks.numerics.outcome import NumericsOutcome
    from fpgaflow.tasks.operations.quality import QualityMeasure
    from fpgaflow.tasks.packaging.service_dir import ServiceTask
    from fpgaflow.tasks.registry.registration import RegisteredVersion
    from fpgaflow.tasks.training.train_step import TrainingOutcome

    TrainedOutcome: TypeAlias = TrainingOutcome | DetectionTrainingOutcome
    SmokeOutcome: TypeAlias = SmokeResult | DetectionSmokeResult


@dataclass(frozen=True)
class ModelKind:
    name: str
    rules: Mapping[str, Any]  # the data validation rules, by name, as the data-validation table lists them
    service_task: ServiceTask  # service.json ``task``
    default_output: str  # the output a request that names none gets
    service_title: str  # how the service-definition artifact names the service
    parity_compared: str  # what the onnx-parity artifact says was compared
    numerics_measure: str  # what the numerics artifact says was measured per format
    tensor_names: Callable[[str], TensorNames]  # (featurizer): the service's TensorFlow-style input and output names

    # (data_dir, settings=None): scan, validate and split; a result with summary(), class names and split manifest
    intake: Callable[..., IntakeResult]
    intake_caption: Callable[[Any], str]  # the data-validation artifact's description of a valid dataset
    load_splits: Callable[[str | Path], pd.DataFrame]
    smoke_images: Callable[[str | Path], Sequence]  # the held-out images of the split manifest the smoke test sends
    # (splits, class_names, dataset_fingerprint, config, output_dir): train, evaluate on the test split, export
    train: Callable[[pd.DataFrame, Sequence[str], str, PipelineConfig, Path], TrainedOutcome]
    publish_training: Callable[[Any, str], None]  # (outcome, mlflow_run_id): the train step's artifacts
    # (run_id, model_name, fpga_model_path, cpu_model_path, class_names, *, tensor_names=...)
    register: Callable[..., RegisteredVersion]
    # (fpga_model_path, cpu_model_path, held_out_images, output_dir): ONNX stages and their parity report
    convert: Callable[[Path, Path, np.ndarray, Path], ConversionReport]
    # (fp32_fpga_onnx, fp32_cpu_onnx, splits, class_names, dataset_fingerprint, spec, config, output_dir)
    evaluate_numerics: Callable[
        [Path, Path, pd.DataFrame, Sequence[str], str, PreprocessSpec, PipelineConfig, Path], NumericsOutcome
    ]
    # (endpoint, service_dir, images, api_key=None): the deployed service vs its definition run offline
    smoke_test: Callable[..., SmokeOutcome]
    smoke_caption: Callable[[Any], str]  # how the smoke-test artifact states the agreement of a result
    quality: QualityMeasure  # how retrain and monitor score a version: accuracy or mAP@0.5
