"""The detector's pictures of its test split: precision-recall curves per class and a few test images with
the detections drawn on them (matplotlib on the Agg canvas, as every picture of the pipeline)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from fpgaflow.fpga_runtime.detections import Detections, draw_detections
from fpgaflow.tasks.charts import new_figure, save_png
from fpgaflow.tasks.detection.average_precision import ImageDetections, PrecisionRecallCurve, average_precision

PRECISION_RECALL_FILE = "precision_recall.png"
SAMPLE_DETECTIONS_FILE = "sample_detections.png"
SAMPLE_IMAGES = 4
DETECTIONS_PER_SAMPLE = 3


def plot_precision_recall(curves: Mapping[str, PrecisionRecallCurve], path: Path) -> Path:
    """One precision-recall curve per class (its AP@0.5 in the legend); a class never detected is a point at (0, 0)."""
    figure = new_figure(6, 5)
    axes = figure.add_subplot()
    for name, curve in curves.items():
        recall = np.concatenate([[0.0], curve.recall])
        precision = np.concatenate([[1.0 if len(curve.precision) else 0.0], curve.precision])
        ap = average_precision(curve.recall, curve.precision)
        axes.step(recall, precision, where="post", label=f"{name} (AP {ap:.2f})")
    axes.set_xlim(0, 1.02)
    axes.set_ylim(0, 1.05)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title("test split, IoU 0.5")
    if curves:
        axes.legend(loc="lower left")
    return save_png(figure, path)


def best_detections(found: ImageDetections, class_names: Sequence[str], count: int = DETECTIONS_PER_SAMPLE) -> Detections:
    order = np.argsort(-np.asarray(found.scores), kind="stable")[:count]
    return Detections(
        np.asarray(found.boxes)[order], np.asarray(found.scores)[order], np.asarray(found.classes)[order], tuple(class_names)
    )


def draw_sample_detections(
    images: Sequence[str | Path], detections: Sequence[ImageDetections], class_names: Sequence[str], path: Path
) -> Path:
    """The first :data:`SAMPLE_IMAGES` images side by side, each with its best detections drawn (label and score)."""
    samples = list(zip(images, detections))[:SAMPLE_IMAGES]
    if not samples:
        raise ValueError("sample detections need at least one image")
    figure = new_figure(3.2 * len(samples), 3.6)
    for position, (image_path, found) in enumerate(samples, start=1):
        with Image.open(image_path) as image:
            picture = draw_detections(image, best_detections(found, class_names))
        axes = figure.add_subplot(1, len(samples), position)
        axes.imshow(np.asarray(picture))
        axes.set_title(Path(image_path).name, fontsize=9)
        axes.axis("off")
    return save_png(figure, path)
