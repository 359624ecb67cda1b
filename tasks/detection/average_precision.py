"""Mean average precision at IoU 0.5, Pascal VOC style (all-point interpolation).

Per class: every detection of the class over all images, by falling score (ties keep their
order), is a true positive when its IoU with a not yet claimed ground-truth box of the class in its
image is at least 0.5 (it claims the box it overlaps most), else a false positive. A detection whose
best box is marked ``difficult`` counts as neither, and difficult boxes are not counted in the
recall. AP is the area under the precision-recall curve after precision is made non-increasing
(VOC 2010+). A class with no (non-difficult) ground truth has no AP and stays out of the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fpgaflow.tasks.detection.boxes import iou

IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class GroundTruth:
    """One image's objects: corner boxes ``[G, 4]`` (normalised or pixels, as the detections), class indices ``[G]``."""

    boxes: np.ndarray
    classes: np.ndarray
    difficult: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        classes = np.asarray(self.classes, np.int64).reshape(-1)
        difficult = np.asarray(self.difficult, bool).reshape(-1) if len(self.difficult) else np.zeros(len(classes), bool)
        if not len(boxes) == len(classes) == len(difficult):
            raise ValueError(f"{len(boxes)} boxes, {len(classes)} classes and {len(difficult)} difficult flags for one image")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "difficult", difficult)


@dataclass(frozen=True)
class ImageDetections:
    """One image's detections: corner boxes ``[K, 4]``, scores ``[K]``, class indices ``[K]``."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


@dataclass(frozen=True)
class MeanAveragePrecision:
    map50: float  # NaN when no class has ground truth
    per_class: list[dict]  # class, ap (None without ground truth), ground_truth, detections, true_positives
    curves: dict[str, PrecisionRecallCurve] = field(default_factory=dict)  # by class name, classes with ground truth
    detections: list[ImageDetections] = field(default_factory=list)  # what was evaluated, one entry per image


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision-recall curve with precision made non-increasing (all-point interpolation)."""
    recall = np.concatenate([[0.0], np.asarray(recall, np.float64), [1.0]])
    precision = np.concatenate([[0.0], np.asarray(precision, np.float64), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


@dataclass(frozen=True)
class PrecisionRecallCurve:
    """One class's detections ranked by score: recall and precision after each, and what they were counted from."""

    recall: np.ndarray
    precision: np.ndarray
    ground_truth: int  # non-difficult boxes of the class
    true_positives: int


def precision_recall_curve(
    detections: Sequence[ImageDetections], truths: Sequence[GroundTruth], class_index: int, iou_threshold: float = IOU_THRESHOLD
) -> PrecisionRecallCurve:
    """The precision-recall curve of one class over a set of images (``detections[i]`` and ``truths[i]`` describe image ``i``)."""
    records = []  # (score, image, box)
    for image, found in enumerate(detections):
        for position in np.flatnonzero(np.asarray(found.classes) == class_index):
            records.append((float(found.scores[position]), image, np.asarray(found.boxes[position], np.float32)))
    records.sort(key=lambda record: -record[0])  # stable: equal scores keep image order
    wanted = [truth.classes == class_index for truth in truths]
    counted = int(sum(np.sum(mask & ~truth.difficult) for mask, truth in zip(wanted, truths)))
    claimed = [np.zeros(int(mask.sum()), bool) for mask in wanted]
    outcomes = []  # 1 true positive, 0 false positive; difficult matches are left out
    for _, image, box in records:
        boxes = truths[image].boxes[wanted[image]]
        difficult = truths[image].difficult[wanted[image]]
        if len(boxes):
            overlaps = iou(box[None], boxes)[0]
            best = int(overlaps.argmax())
            if overlaps[best] >= iou_threshold:
                if difficult[best]:
                    continue
                if not claimed[image][best]:
                    claimed[image][best] = True
                    outcomes.append(1)
                    continue
        outcomes.append(0)
    hits = np.asarray(outcomes, np.float64)
    true_positives = np.cumsum(hits)
    recall = true_positives / counted if counted else np.zeros_like(true_positives)
    precision = true_positives / np.maximum(np.arange(1, len(hits) + 1), 1)
    return PrecisionRecallCurve(recall, precision, counted, int(hits.sum()))


def mean_average_precision(
    detections: Sequence[ImageDetections],
    truths: Sequence[GroundTruth],
    class_names: Sequence[str],
    iou_threshold: float = IOU_THRESHOLD,
) -> MeanAveragePrecision:
    """mAP over the classes that have ground truth, and the per-class table."""
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} images with detections but {len(truths)} with ground truth")
    per_class: list[dict] = []
    curves: dict[str, PrecisionRecallCurve] = {}
    defined: list[float] = []
    for index, name in enumerate(class_names):
        curve = precision_recall_curve(detections, truths, index, iou_threshold)
        ap = average_precision(curve.recall, curve.precision) if curve.ground_truth else None
        per_class.append(
            {
                "class": name,
                "ground_truth": curve.ground_truth,
                "detections": len(curve.recall),
                "true_positives": curve.true_positives,
                "ap": ap,
            }
        )
        if ap is not None:
            curves[name] = curve
            defined.append(ap)
    return MeanAveragePrecision(float(np.mean(defined)) if defined else float("nan"), per_class, curves, list(detections))


def detections_of(outputs: dict[str, np.ndarray]) -> list[ImageDetections]:
    """The detection outputs (``boxes``, ``scores``, ``classes``, ``num_detections``) as one entry per image."""
    return [
        ImageDetections(outputs["boxes"][i, :count], outputs["scores"][i, :count], outputs["classes"][i, :count])
        for i, count in enumerate(np.asarray(outputs["num_detections"], np.int64))
    ]
