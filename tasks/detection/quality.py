"""The detector's quality measure, mAP@0.5 on annotated images (:data:`MEAN_AP`): retraining scores a
service definition's ONNX stages in process on the test split, monitoring a deployed detector over
gRPC on a holdout folder laid out as a detection dataset.

Detections are matched to the ground truth by class name, so two versions with different label lists
are compared fairly: the classes are those the annotations name, a label a version does not know
has no detections from it (AP 0), and detections of labels the annotations do not name are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from fpgaflow.tasks.detection.annotations import read_annotation
from fpgaflow.tasks.detection.average_precision import ImageDetections, detections_of, mean_average_precision
from fpgaflow.tasks.detection.ground_truth import load_ground_truth
from fpgaflow.tasks.detection.intake import load_detection_splits, scan_dataset
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.operations.quality import QualityMeasure, QualityReport
from fpgaflow.tasks.operations.scoring import OfflineService, batches

if TYPE_CHECKING:
    from fpgaflow.fpga_runtime.client import PredictionClient


class ClassAveragePrecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    ground_truth: int
    detections: int
    true_positives: int
    ap: float | None  # None: no ground truth of the class


class MeanAPReport(BaseModel):
    """mAP@0.5 over the classes the annotations name, and AP per class."""

    model_config = ConfigDict(frozen=True)

    metric: Literal["mAP@0.5"] = "mAP@0.5"
    images: int
    map50: float
    per_class: tuple[ClassAveragePrecision, ...]

    @property
    def value(self) -> float:
        return self.map50

    def improvement_over(self, other: QualityReport) -> float:
        if not isinstance(other, MeanAPReport):
            raise ValueError(f"mAP@0.5 cannot be compared with {other.metric}")
        return self.map50 - other.map50

    def table(self) -> list[dict]:
        return [row.model_dump() for row in self.per_class]

    def class_cells(self) -> dict[str, str]:
        return {
            row.label: "-" if row.ap is None else f"AP {row.ap:.3f} ({row.true_positives}/{row.ground_truth} found)"
            for row in self.per_class
        }

    def total_cell(self) -> str:
        return f"mAP@0.5 {self.map50:.4f} ({self.images} images)"


def map50_report(found: Sequence[ImageDetections], found_names: Sequence[str], rows: pd.DataFrame) -> MeanAPReport:
    """mAP@0.5 of ``found`` (class indices into ``found_names``) against the annotation files of ``rows``."""
    labels = sorted({item.label for path in rows["annotation"] for item in read_annotation(Path(path)).objects})
    if not labels:
        raise PipelineStepError("the annotations of the images to score name no objects: mAP@0.5 needs ground truth")
    position = {name: index for index, name in enumerate(labels)}
    to_label = np.asarray([position.get(name, -1) for name in found_names], np.int64)
    relabelled = [ImageDetections(image.boxes, image.scores, to_label[np.asarray(image.classes, np.int64)]) for image in found]
    result = mean_average_precision(relabelled, load_ground_truth(rows, labels), labels)
    per_class = tuple(
        ClassAveragePrecision(
            label=row["class"],
            ground_truth=row["ground_truth"],
            detections=row["detections"],
            true_positives=row["true_positives"],
            ap=row["ap"],
        )
        for row in result.per_class
    )
    return MeanAPReport(images=len(rows), map50=result.map50, per_class=per_class)


def score_split_by_map50(service_dir: Path, split_path: str | Path, batch_size: int) -> MeanAPReport:
    """mAP@0.5 of a detection service definition run in this process on the test split of ``split_path``."""
    splits = load_detection_splits(split_path)
    test = splits[splits["split"] == "test"]
    if test.empty:
        raise PipelineStepError(f"the split manifest {split_path} has no 'test' images")
    with OfflineService(service_dir) as offline:
        if offline.service.task != "detection":
            raise PipelineStepError(
                f"{service_dir} is a {offline.service.task} service: only detection services are scored by mAP"
            )
        found: list[ImageDetections] = []
        for batch in batches(list(test["path"]), batch_size):
            found += detections_of(offline.outputs([Path(path).read_bytes() for path in batch]))
        return map50_report(found, offline.service.class_names, test)


def score_endpoint_by_map50(client: PredictionClient, data_dir: Path, batch_size: int) -> tuple[MeanAPReport, list[str]]:
    """mAP@0.5 of the detector behind ``client`` on an annotated holdout folder; images that do not decode or
    have no readable annotation are skipped."""
    images, _ = scan_dataset(data_dir)
    if images.empty:
        raise PipelineStepError(f"{data_dir} holds no images to score")
    usable = images["decodes"].eq(True) & images["annotated"] & images["annotation_readable"]
    rows, skipped = images[usable], images.loc[~usable, "relpath"].tolist()
    if rows.empty:
        raise PipelineStepError(f"{data_dir} holds no decodable images with a readable annotation to score")
    found: list[ImageDetections] = []
    for batch in batches(list(rows["path"]), batch_size):
        for image in client.detect_images([Path(path).read_bytes() for path in batch]):
            found.append(ImageDetections(image.boxes, image.scores, image.classes))
    return map50_report(found, client.class_names(), rows), skipped


MEAN_AP = QualityMeasure(
    metric="mAP@0.5",
    holdout_layout="labels.txt, images/ and annotations/ (one .json or .xml per image), as a detection dataset",
    default_threshold=lambda settings: settings.monitor_min_map50,
    score_service=score_split_by_map50,
    score_endpoint=score_endpoint_by_map50,
)
