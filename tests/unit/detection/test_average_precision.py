"""VOC mAP@0.5 (all-point interpolation) on cases small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fpgaflow.tasks.detection.average_precision import (
    GroundTruth,
    ImageDetections,
    average_precision,
    detections_of,
    mean_average_precision,
)

A = [0.0, 0.0, 0.4, 0.4]
B = [0.5, 0.5, 0.9, 0.9]
ELSEWHERE = [0.0, 0.6, 0.2, 0.9]


def found(*rows):
    """Detections as (box, score, class) rows."""
    return ImageDetections(
        np.array([row[0] for row in rows], np.float32).reshape(-1, 4),
        np.array([row[1] for row in rows], np.float32),
        np.array([row[2] for row in rows], np.int64),
    )


def test_hand_computed_ap_of_one_class():
    # Two objects of class 0 in two images. By score: 0.9 hits image 0's object (TP), 0.8 is a false
    # positive, 0.7 hits image 1's object (TP): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    # Made non-increasing: 1 up to recall 1/2, then 2/3 → AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    truths = [GroundTruth([A], [0]), GroundTruth([B], [0])]
    detections = [found((A, 0.9, 0), (ELSEWHERE, 0.8, 0)), found((B, 0.7, 0))]
    result = mean_average_precision(detections, truths, ["digit"])
    assert result.map50 == pytest.approx(5 / 6)
    assert result.per_class == [
        {"class": "digit", "ground_truth": 2, "detections": 3, "true_positives": 2, "ap": pytest.approx(5 / 6)}
    ]
    curve = result.curves["digit"]  # what the precision-recall picture draws
    np.testing.assert_allclose(curve.recall, [1 / 2, 1 / 2, 1])
    np.testing.assert_allclose(curve.precision, [1, 1 / 2, 2 / 3])
    assert result.detections == detections


def test_a_second_detection_of_a_claimed_object_is_a_false_positive():
    # TP then duplicate FP: precision 1, 1/2 at recall 1, 1 → AP 1; a missed second object halves it.
    truths = [GroundTruth([A, B], [0, 0])]
    detections = [found((A, 0.9, 0), ([0.01, 0.0, 0.4, 0.41], 0.8, 0))]
    assert mean_average_precision(detections, truths, ["x"]).map50 == pytest.approx(0.5)


def test_iou_below_one_half_does_not_count_and_classes_are_kept_apart():
    truths = [GroundTruth([A, B], [0, 1])]
    shifted = [0.0, 0.2, 0.4, 0.6]  # IoU with A = 0.08 / 0.24 = 1/3
    detections = [found((shifted, 0.9, 0), (B, 0.8, 0), (B, 0.7, 1))]
    result = mean_average_precision(detections, truths, ["a", "b"])
    assert [row["ap"] for row in result.per_class] == [0.0, pytest.approx(1.0)]
    assert result.map50 == pytest.approx(0.5)


def test_difficult_objects_are_neither_required_nor_penalised():
    truths = [GroundTruth([A, B], [0, 0], difficult=[False, True])]
    detections = [found((B, 0.95, 0), (A, 0.9, 0))]
    result = mean_average_precision(detections, truths, ["x"])
    assert result.map50 == pytest.approx(1.0) and result.per_class[0]["ground_truth"] == 1


def test_classes_without_ground_truth_stay_out_of_the_mean():
    truths = [GroundTruth([A], [0])]
    detections = [found((A, 0.9, 0), (B, 0.5, 1))]
    result = mean_average_precision(detections, truths, ["present", "absent"])
    assert result.per_class[1]["ap"] is None and result.map50 == pytest.approx(1.0)
    assert math.isnan(mean_average_precision([found()], [GroundTruth(np.zeros((0, 4)), [])], ["none"]).map50)


def test_all_point_interpolation_uses_the_precision_envelope():
    assert average_precision(np.array([0.25, 0.5, 0.5, 1.0]), np.array([1.0, 1.0, 0.5, 0.8])) == pytest.approx(0.5 + 0.5 * 0.8)


def test_detection_outputs_become_one_entry_per_image_without_padding():
    outputs = {
        "boxes": np.array([[A, B], [B, [0, 0, 0, 0]]], np.float32),
        "scores": np.array([[0.9, 0.5], [0.7, 0.0]], np.float32),
        "classes": np.array([[0, 1], [1, -1]]),
        "num_detections": np.array([2, 1]),
    }
    images = detections_of(outputs)
    assert [len(image.scores) for image in images] == [2, 1] and images[1].classes.tolist() == [1]
