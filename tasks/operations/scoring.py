"""The classifier's quality measure, top-1 accuracy on labelled images: retraining scores a service
definition's ONNX stages in process, monitoring a deployed service over gRPC (:data:`ACCURACY`).

A scorer takes a batch of encoded images and returns the predicted class name of each; accuracy is
counted on class names, so two versions with different class lists are compared fairly (a class a
version does not know is a wrong answer for it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from fpgaflow.fpga_runtime.executor import CpuStage
from fpgaflow.fpga_runtime.preprocessing import preprocess
from fpgaflow.fpga_runtime.service import load_service
from fpgaflow.tasks.data.intake import load_splits
from fpgaflow.tasks.data.manifest import build_manifest
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.operations.quality import QualityMeasure, QualityReport

if TYPE_CHECKING:
    from fpgaflow.fpga_runtime.client import PredictionClient

BatchScorer = Callable[[list[bytes]], list[str]]


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: str


class ClassAccuracy(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    images: int
    correct: int
    accuracy: float


class AccuracyReport(BaseModel):
    """Top-1 accuracy overall and per true class."""

    model_config = ConfigDict(frozen=True)

    metric: Literal["accuracy"] = "accuracy"
    images: int
    correct: int
    accuracy: float
    per_class: tuple[ClassAccuracy, ...]

    @property
    def value(self) -> float:
        return self.accuracy

    def improvement_over(self, other: QualityReport) -> float:
        if not isinstance(other, AccuracyReport):
            raise ValueError(f"accuracy cannot be compared with {other.metric}")
        return (self.correct - other.correct) / self.images  # exact: counted, not a difference of rounded fractions

    def table(self) -> list[dict]:
        return [row.model_dump() for row in self.per_class]

    def class_cells(self) -> dict[str, str]:
        return {row.label: f"{row.correct}/{row.images} ({row.accuracy:.3f})" for row in self.per_class}

    def total_cell(self) -> str:
        return f"{self.correct}/{self.images} ({self.accuracy:.4f})"


def accuracy_report(labels: Sequence[str], predictions: Sequence[str]) -> AccuracyReport:
    """Accuracy of predicted class names against true class names (same order, at least one)."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    if not labels:
        raise ValueError("no labelled images to score")
    totals = Counter(labels)
    hits = Counter(label for label, predicted in zip(labels, predictions) if label == predicted)
    per_class = tuple(
        ClassAccuracy(label=label, images=totals[label], correct=hits[label], accuracy=hits[label] / totals[label])
        for label in sorted(totals)
    )
    correct = sum(hits.values())
    return AccuracyReport(images=len(labels), correct=correct, accuracy=correct / len(labels), per_class=per_class)


def folder_images(data_dir: Path) -> tuple[list[LabelledImage], list[str]]:
    """The decodable images of a folder-per-class folder, and the relative paths of the files skipped."""
    manifest = build_manifest(Path(data_dir))
    readable = manifest["decodes"].eq(True)
    images = [LabelledImage(Path(row.path), row.label) for row in manifest[readable].itertuples()]
    return images, manifest.loc[~readable, "relpath"].tolist()


def split_images(split_path: str | Path, split: str = "test") -> list[LabelledImage]:
    """The images of one split of an intake split manifest."""
    splits = load_splits(split_path)
    chosen = splits[splits["split"] == split]
    if chosen.empty:
        raise PipelineStepError(f"the split manifest {split_path} has no {split!r} images")
    return [LabelledImage(Path(row.path), str(row.label)) for row in chosen.itertuples()]


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def score_images(images: Sequence[LabelledImage], scorer: BatchScorer, batch_size: int) -> AccuracyReport:
    predictions: list[str] = []
    for batch in batches(images, batch_size):
        predicted = scorer([image.path.read_bytes() for image in batch])
        if len(predicted) != len(batch):
            raise ValueError(f"the scorer returned {len(predicted)} predictions for {len(batch)} images")
        predictions.extend(predicted)
    return accuracy_report([image.label for image in images], predictions)


def top1_names(probabilities: np.ndarray, class_names: Sequence[str]) -> list[str]:
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(class_names):
        raise ValueError(f"expected probabilities of shape [N, {len(class_names)}], got {list(probabilities.shape)}")
    return [class_names[index] for index in probabilities.argmax(axis=1)]


class OfflineService:
    """A service definition's stages run in this process: the same preprocessing and the same ONNX graphs
    (numeric format included) a node runs, every stage on the host CPU. A device's on-chip memory
    limits where a stage can be placed (the cluster splits one too big for a device), not what it
    computes, so it does not apply here.
    """

    def __init__(self, service_dir: Path) -> None:
        self.service_dir = Path(service_dir)
        self.service = load_service(self.service_dir)
        self._runners = [CpuStage(stage, self.service_dir / stage.file) for stage in self.service.stages]
        self._input_name = self.service.stages[0].inputs[0].name

    def outputs(self, encoded: Sequence[bytes]) -> dict[str, np.ndarray]:
        tensors = {self._input_name: np.stack([preprocess(data, self.service.preprocessing) for data in encoded])}
        for runner in self._runners:
            tensors.update(runner.run({spec.name: tensors[spec.name] for spec in runner.stage.inputs}))
        return tensors

    def close(self) -> None:
        for runner in self._runners:
            runner.close()

    def __enter__(self) -> OfflineService:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def score_service_dir(service_dir: Path, images: Sequence[LabelledImage], batch_size: int) -> AccuracyReport:
    """Accuracy of a service definition run in this process (:class:`OfflineService`)."""
    with OfflineService(service_dir) as offline:
        service = offline.service
        if service.task != "classification":
            raise PipelineStepError(
                f"{service_dir} is a {service.task} service: only classification services are scored by accuracy"
            )

        def scorer(encoded: list[bytes]) -> list[str]:
            return top1_names(offline.outputs(encoded)[service.default_output], service.class_names)

        return score_images(images, scorer, batch_size)


def score_split_by_accuracy(service_dir: Path, split_path: str | Path, batch_size: int) -> AccuracyReport:
    return score_service_dir(service_dir, split_images(split_path), batch_size)


def score_endpoint_by_accuracy(client: PredictionClient, data_dir: Path, batch_size: int) -> tuple[AccuracyReport, list[str]]:
    """Accuracy of the model behind ``client`` on a folder-per-class holdout; holdout classes the model does
    not know count as wrong answers, and are named in the error when none of the classes is known."""
    images, skipped = folder_images(data_dir)
    if not images:
        raise PipelineStepError(f"{data_dir} holds no decodable images in class folders to score")
    class_names = client.class_names()
    holdout_classes = {image.label for image in images}
    if not holdout_classes & set(class_names):
        raise PipelineStepError(
            f"none of the holdout classes {sorted(holdout_classes)} is a class of the served model ({', '.join(class_names)})"
        )

    def scorer(encoded: list[bytes]) -> list[str]:
        return top1_names(client.score_images(encoded), class_names)

    return score_images(images, scorer, batch_size), skipped


ACCURACY = QualityMeasure(
    metric="accuracy",
    holdout_layout="one sub-folder of images per class",
    default_threshold=lambda settings: settings.monitor_min_accuracy,
    score_service=score_split_by_accuracy,
    score_endpoint=score_endpoint_by_accuracy,
)
