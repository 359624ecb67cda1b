"""The model-kind protocol: what a stage's step may ask of a classifier or a detector.

The steps know a kind only through this protocol, so no stage imports a kind at run time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
    from fpgaflow.tasks.config import PipelineConfig
    from fpgaflow.tasks.conversion.onnx_stages import ConversionReport
    from fpgaflow.tasks.data.intake import IntakeResult
    from fpgaflow.tasks.deployment.smoke import SmokeResult
    from fpgaflow.tasks.detection.smoke import DetectionSmokeResult
    from fpgaflow.tasks.detection.train_step import DetectionTrainingOutcome
    from fpgaflow.tasks.numerics.outcome import NumericsOutcome
    from fpgaflow.tasks.packaging.service_dir import ServiceTask
    from fpgaflow.tasks.registry.registration import RegisteredVersion
    from fpgaflow.tasks.training.train_step import TrainingOutcome

    TrainedOutcome: TypeAlias = TrainingOutcome | DetectionTrainingOutcome
    SmokeOutcome: TypeAlias = SmokeResult | DetectionSmokeResult


class ModelKind(Protocol):
    name: str
    service_task: ServiceTask  # service.json ``task``
    default_output: str  # the output a request that names none gets
    service_title: str  # how the service-definition artifact names the service
    parity_compared: str  # what the onnx-parity artifact says was compared
    numerics_measure: str  # what the numerics artifact says was measured per format

    @property
    def rules(self) -> Mapping[str, Any]:
        """The data validation rules, by name, as the data-validation table lists them."""

    def intake(self, data_dir: Path, settings=None) -> IntakeResult:
        """Scan, validate and split ``data_dir``: a result with ``summary()``, the class names and the split manifest."""

    def intake_caption(self, result) -> str:
        """The data-validation artifact's description of a valid dataset."""

    def load_splits(self, split_path: str | Path) -> pd.DataFrame: ...

    def smoke_images(self, split_path: str | Path) -> Sequence:
        """The held-out images of the split manifest that the smoke test sends."""

    def train(
        self, splits: pd.DataFrame, class_names: Sequence[str], dataset_fingerprint: str, config: PipelineConfig, output_dir: Path
    ) -> TrainedOutcome:
        """Train, evaluate on the test split and export: an outcome with ``summary()``, ``evaluation``, ``model_files``."""

    def publish_training(self, outcome) -> None:
        """The train step's artifacts."""

    def register(
        self, run_id: str, model_name: str, fpga_model_path: Path, cpu_model_path: Path, class_names: Sequence[str]
    ) -> RegisteredVersion: ...

    def convert(
        self, fpga_model_path: Path, cpu_model_path: Path, held_out_images: np.ndarray, output_dir: Path
    ) -> ConversionReport: ...

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
    ) -> NumericsOutcome: ...

    def smoke_test(self, endpoint: str, service_dir: Path, images: Sequence, api_key: str | None = None) -> SmokeOutcome:
        """Compare the deployed service with its service definition run offline; the result has ``summary()`` and ``rows``."""

    def smoke_caption(self, result) -> str:
        """How the smoke-test artifact states the agreement of a smoke ``result``."""
