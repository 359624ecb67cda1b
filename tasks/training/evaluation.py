"""Evaluation on the test split: accuracy, macro precision/recall/F1, one-vs-rest AUC, per-class table,
confusion matrix (numbers and a PNG), per-class precision/recall/F1 (a PNG). Everything returned is plain
data, ready for the registry step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

from fpgaflow.tasks.charts import new_figure, save_png
from fpgaflow.tasks.errors import PipelineStepError

CONFUSION_MATRIX_FILE = "confusion_matrix.png"
PER_CLASS_METRICS_FILE = "per_class_metrics.png"


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]  # accuracy, precision_macro, recall_macro, f1_macro, auc_ovr
    per_class: list[dict]  # one row per class: class, precision, recall, f1, auc, support
    confusion_matrix: list[list[int]]  # rows = true class, columns = predicted class, in class_names order
    class_names: list[str]
    pictures: list[str]  # the confusion matrix and per-class metrics PNGs, when an output directory was given

    def to_dict(self) -> dict:
        return asdict(self)


def one_vs_rest_auc(labels: np.ndarray, probabilities: np.ndarray) -> list[float | None]:
    """Per class, the ROC AUC of its probability for 'this class vs the rest'; None where the test split
    lacks positives or negatives of the class."""
    aucs: list[float | None] = []
    for index in range(probabilities.shape[1]):
        positive = labels == index
        aucs.append(float(roc_auc_score(positive, probabilities[:, index])) if 0 < positive.sum() < len(labels) else None)
    return aucs


def evaluate_predictions(
    probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str], output_dir: Path | None = None
) -> Evaluation:
    """Metrics of class probabilities [N, C] against true label indices [N]; writes the confusion matrix PNG
    into ``output_dir`` when given. The macro AUC averages the classes whose AUC is defined."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    count = len(class_names)
    if probabilities.ndim != 2 or probabilities.shape[1] != count:
        raise PipelineStepError(f"probabilities must have shape [N, {count}] for {count} classes, got {probabilities.shape}")
    if len(labels) != len(probabilities) or len(labels) == 0:
        raise PipelineStepError(
            f"need one label per prediction and at least one of each: {len(labels)} labels, {len(probabilities)} predictions"
        )
    if labels.min() < 0 or labels.max() >= count:
        raise PipelineStepError(f"label indices must lie in [0, {count}), got [{labels.min()}, {labels.max()}]")
    predicted = probabilities.argmax(axis=1)
    every_class = list(range(count))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=every_class, zero_division=0)
    aucs = one_vs_rest_auc(labels, probabilities)
    defined = [value for value in aucs if value is not None]
    metrics = {
        "accuracy": float(accuracy_score(labels, predicted)),
        "precision_macro": float(np.mean(precision)),
        "recall_macro": float(np.mean(recall)),
        "f1_macro": float(np.mean(f1)),
        "auc_ovr": float(np.mean(defined)) if defined else float("nan"),
    }
    per_class = [
        {
            "class": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "auc": aucs[i],
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    ]
    matrix = confusion_matrix(labels, predicted, labels=every_class)
    pictures = []
    if output_dir is not None:
        pictures = [
            str(plot_confusion_matrix(matrix, class_names, Path(output_dir) / CONFUSION_MATRIX_FILE)),
            str(plot_per_class_metrics(per_class, Path(output_dir) / PER_CLASS_METRICS_FILE)),
        ]
    return Evaluation(metrics, per_class, matrix.astype(int).tolist(), list(class_names), pictures)


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """The confusion matrix as a PNG (counts in the cells, true class down, predicted class across)."""
    matrix = np.asarray(matrix)
    side = max(4.0, 0.5 * len(class_names) + 2)
    figure = new_figure(side + 1, side)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    ticks = range(len(class_names))
    axes.set_xticks(ticks, labels=class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, labels=class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), value in np.ndenumerate(matrix):
        axes.text(column, row, str(value), ha="center", va="center", color="white" if value > threshold else "black")
    return save_png(figure, path)


def plot_per_class_metrics(per_class: Sequence[dict], path: Path) -> Path:
    """Precision, recall and F1 of each class as grouped bars (rows of :attr:`Evaluation.per_class`)."""
    names = [str(row["class"]) for row in per_class]
    measures = ("precision", "recall", "f1")
    figure = new_figure(max(6.0, 0.6 * len(names) + 2), 4)
    axes = figure.add_subplot()
    positions = np.arange(len(names))
    width = 0.8 / len(measures)
    for offset, measure in enumerate(measures):
        axes.bar(positions + (offset - 1) * width, [row[measure] for row in per_class], width, label=measure)
    axes.set_xticks(positions, labels=names, rotation=45, ha="right")
    axes.set_ylim(0, 1.05)
    axes.set_xlabel("class")
    axes.set_ylabel("test split")
    axes.legend(loc="lower right")
    return save_png(figure, path)
