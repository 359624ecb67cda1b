"""Evaluation metrics against scikit-learn on hand-made predictions, and the confusion matrix image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.training.evaluation import CONFUSION_MATRIX_FILE, PER_CLASS_METRICS_FILE, evaluate_predictions

CLASSES = ["cat", "dog", "fox"]
LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2])
PROBABILITIES = np.array(
    [
        [0.8, 0.1, 0.1],  # cat, right
        [0.4, 0.5, 0.1],  # cat taken for a dog
        [0.6, 0.3, 0.1],  # cat, right
        [0.2, 0.7, 0.1],  # dog, right
        [0.3, 0.3, 0.4],  # dog taken for a fox
        [0.1, 0.2, 0.7],  # fox, right
        [0.5, 0.2, 0.3],  # fox taken for a cat
        [0.1, 0.1, 0.8],  # fox, right
    ]
)


def test_metrics_match_scikit_learn_and_hand_counts(tmp_path):
    evaluation = evaluate_predictions(PROBABILITIES, LABELS, CLASSES, tmp_path)
    predicted = PROBABILITIES.argmax(axis=1)
    metrics = evaluation.metrics
    assert metrics["accuracy"] == 5 / 8
    assert metrics["precision_macro"] == pytest.approx(precision_score(LABELS, predicted, average="macro"))
    assert metrics["recall_macro"] == pytest.approx(recall_score(LABELS, predicted, average="macro"))
    assert metrics["f1_macro"] == pytest.approx(f1_score(LABELS, predicted, average="macro"))
    assert metrics["auc_ovr"] == pytest.approx(roc_auc_score(LABELS, PROBABILITIES, multi_class="ovr", average="macro"))
    assert evaluation.confusion_matrix == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    cat = evaluation.per_class[0]
    assert (cat["class"], cat["precision"], cat["recall"], cat["support"]) == ("cat", 2 / 3, 2 / 3, 3)
    assert cat["auc"] == pytest.approx(roc_auc_score(LABELS == 0, PROBABILITIES[:, 0]))
    json.dumps(evaluation.to_dict(), allow_nan=False)  # plain data for the registry step


def test_confusion_matrix_and_per_class_metrics_pngs(tmp_path):
    evaluation = evaluate_predictions(PROBABILITIES, LABELS, CLASSES, tmp_path / "evaluation")
    assert [Path(path).name for path in evaluation.pictures] == [CONFUSION_MATRIX_FILE, PER_CLASS_METRICS_FILE]
    for path in evaluation.pictures:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 300 and image.height >= 300
            assert len(set(image.convert("RGB").getdata())) > 10  # drawn, not blank
    assert evaluate_predictions(PROBABILITIES, LABELS, CLASSES).pictures == []


def test_class_absent_from_the_test_split_has_no_auc_and_zero_recall():
    present = LABELS != 1
    evaluation = evaluate_predictions(PROBABILITIES[present], LABELS[present], CLASSES)
    dog = evaluation.per_class[1]
    assert dog["auc"] is None and dog["support"] == 0 and dog["recall"] == 0.0
    defined = [roc_auc_score(LABELS[present] == c, PROBABILITIES[present][:, c]) for c in (0, 2)]
    assert evaluation.metrics["auc_ovr"] == pytest.approx(np.mean(defined))


def test_shape_and_label_problems_are_named():
    with pytest.raises(PipelineStepError, match=r"shape \[N, 3\] for 3 classes"):
        evaluate_predictions(PROBABILITIES[:, :2], LABELS, CLASSES)
    with pytest.raises(PipelineStepError, match="7 labels, 8 predictions"):
        evaluate_predictions(PROBABILITIES, LABELS[:7], CLASSES)
    with pytest.raises(PipelineStepError, match=r"must lie in \[0, 3\)"):
        evaluate_predictions(PROBABILITIES, LABELS + 1, CLASSES)
