"""The detector kind (ssd_vgg): SSD's feature maps and heads on the FPGA, box decoding and NMS on the CPU.

The detector's own code is the package :mod:`fpgaflow.tasks.detection`; this module is its face to the stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.fpga_runtime.protocol import BOXES_OUTPUT
from fpgaflow.tasks.artifacts import publish_markdown, publish_table
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.conversion.onnx_stages import ConversionReport
from fpgaflow.tasks.detection.conversion import convert_detector
from fpgaflow.tasks.detection.intake import (
    RULES,
    DetectionIntakeResult,
    intake_detection_dataset,
    load_detection_splits,
    split_image_paths,
)
from fpgaflow.tasks.detection.numerics import evaluate_detector_numerics
from fpgaflow.tasks.detection.registration import register_trained_detector
from fpgaflow.tasks.detection.smoke import DetectionSmokeResult, detection_smoke_test
from fpgaflow.tasks.detection.train_step import DetectionTrainingOutcome, detection_train_step, training_markdown
from fpgaflow.tasks.numerics.outcome import NumericsOutcome
from fpgaflow.tasks.packaging.service_dir import ServiceTask
from fpgaflow.tasks.registry.registration import RegisteredVersion


class Detector:
    name = "detector"
    rules = RULES
    service_task: ServiceTask = "detection"
    default_output = BOXES_OUTPUT  # a request that names no outputs gets all four detection outputs
    service_title = "Detection service"
    parity_compared = "Keras vs onnxruntime detections"
    numerics_measure = "test mAP@0.5"

    def intake(self, data_dir: Path, settings=None) -> DetectionIntakeResult:
        return intake_detection_dataset(data_dir, settings)

    def intake_caption(self, result: DetectionIntakeResult) -> str:
        return (
            f"{result.num_images} images, {result.num_objects} objects, {result.num_classes} labels, "
            f"fingerprint {result.dataset_fingerprint[:16]}"
        )

    def load_splits(self, split_path: str | Path) -> pd.DataFrame:
        return load_detection_splits(split_path)

    def smoke_images(self, split_path: str | Path) -> list[Path]:
        return split_image_paths(split_path)

    def train(
        self, splits: pd.DataFrame, class_names: Sequence[str], dataset_fingerprint: str, config: PipelineConfig, output_dir: Path
    ) -> DetectionTrainingOutcome:
        return detection_train_step(splits, class_names, dataset_fingerprint, config, output_dir)

    def publish_training(self, outcome: DetectionTrainingOutcome) -> None:
        publish_markdown("training-summary", training_markdown(outcome), "detector, training and test mAP")
        publish_table("test-average-precision-per-class", outcome.evaluation.per_class, "AP@0.5 per class on the test split")

    def register(
        self, run_id: str, model_name: str, fpga_model_path: Path, cpu_model_path: Path, class_names: Sequence[str]
    ) -> RegisteredVersion:
        return register_trained_detector(run_id, model_name, fpga_model_path, cpu_model_path, class_names)

    def convert(
        self, fpga_model_path: Path, cpu_model_path: Path, held_out_images: np.ndarray, output_dir: Path
    ) -> ConversionReport:
        return convert_detector(fpga_model_path, cpu_model_path, held_out_images, output_dir)

    def evaluate_numerics(
        self,
        fp32_fpga_onnx: Path,
        fp32_cpu_onnx: Path,
        splits: pd.DataFrame,
        class_names: Sequence[str],
        dataset_fingerprint: str,
        spec: PreprocessSpec,
        config: PipelineConfig,
        output_dir: Path,
    ) -> NumericsOutcome:
        return evaluate_detector_numerics(
            fp32_fpga_onnx, fp32_cpu_onnx, splits, class_names, dataset_fingerprint, spec, config, output_dir
        )

    def smoke_test(
        self, endpoint: str, service_dir: Path, images: Sequence[Path], api_key: str | None = None
    ) -> DetectionSmokeResult:
        return detection_smoke_test(endpoint, service_dir, images, api_key=api_key)

    def smoke_caption(self, result: DetectionSmokeResult) -> str:
        return f"detection agreement {result.agreement:.0%}"


DETECTOR = Detector()
