"""The classifier kind (resnet50, resnet152, densenet121, vgg16): a featurizer on the FPGA, a softmax head on the CPU."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.artifacts import publish_markdown, publish_table
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.conversion.onnx_stages import PROBABILITIES, ConversionReport, convert_stages
from fpgaflow.tasks.data.expectations import RULES
from fpgaflow.tasks.data.intake import IntakeResult, intake_dataset, load_splits
from fpgaflow.tasks.deployment.smoke import SmokeResult, smoke_test
from fpgaflow.tasks.numerics.accuracy import evaluate_numerics
from fpgaflow.tasks.numerics.outcome import NumericsOutcome
from fpgaflow.tasks.operations.scoring import LabelledImage, split_images
from fpgaflow.tasks.packaging.service_dir import ServiceTask
from fpgaflow.tasks.registry.registration import RegisteredVersion, register_trained_model
from fpgaflow.tasks.training.train_step import TrainingOutcome, evaluation_markdown, featurizer_markdown, train_step


class Classifier:
    name = "classifier"
    rules = RULES
    service_task: ServiceTask = "classification"
    default_output = PROBABILITIES
    service_title = "Service"
    parity_compared = "Keras vs onnxruntime"
    numerics_measure = "test accuracy"

    def intake(self, data_dir: Path, settings=None) -> IntakeResult:
        return intake_dataset(data_dir, settings)

    def intake_caption(self, result: IntakeResult) -> str:
        return f"{result.num_images} images, {result.num_classes} classes, fingerprint {result.dataset_fingerprint[:16]}"

    def load_splits(self, split_path: str | Path) -> pd.DataFrame:
        return load_splits(split_path)

    def smoke_images(self, split_path: str | Path) -> list[LabelledImage]:
        return split_images(split_path)

    def train(
        self, splits: pd.DataFrame, class_names: Sequence[str], dataset_fingerprint: str, config: PipelineConfig, output_dir: Path
    ) -> TrainingOutcome:
        return train_step(splits, class_names, dataset_fingerprint, config, output_dir)

    def publish_training(self, outcome: TrainingOutcome) -> None:
        publish_markdown("featurizer", featurizer_markdown(outcome.featurizer), "architecture, sizes and MACs")
        publish_table("training-epochs", outcome.history, f"{len(outcome.history)} epochs of the head")
        publish_markdown("evaluation", evaluation_markdown(outcome), "test-split metrics and confusion matrix")
        publish_table(
            "test-metrics-per-class", outcome.evaluation.per_class, "precision, recall, F1 and AUC per class on the test split"
        )

    def register(
        self, run_id: str, model_name: str, fpga_model_path: Path, cpu_model_path: Path, class_names: Sequence[str]
    ) -> RegisteredVersion:
        return register_trained_model(run_id, model_name, fpga_model_path, cpu_model_path, class_names)

    def convert(
        self, fpga_model_path: Path, cpu_model_path: Path, held_out_images: np.ndarray, output_dir: Path
    ) -> ConversionReport:
        return convert_stages(fpga_model_path, cpu_model_path, held_out_images, output_dir)

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
        return evaluate_numerics(
            fp32_fpga_onnx, fp32_cpu_onnx, splits, class_names, dataset_fingerprint, spec, config, output_dir
        )

    def smoke_test(
        self, endpoint: str, service_dir: Path, images: Sequence[LabelledImage], api_key: str | None = None
    ) -> SmokeResult:
        return smoke_test(endpoint, service_dir, images, api_key=api_key)

    def smoke_caption(self, result: SmokeResult) -> str:
        return f"top-1 agreement {result.top1_agreement:.0%}, accuracy {result.accuracy:.2%}"


CLASSIFIER = Classifier()
