"""Comparing two runs' detections as sets of twins."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaflow.tasks.detection.parity import detection_parity


def outputs(boxes, scores, classes, keep=3):
    count = len(scores)
    padded = {
        "boxes": np.zeros((1, keep, 4), np.float32),
        "scores": np.zeros((1, keep), np.float32),
        "classes": np.full((1, keep), -1),
        "num_detections": np.array([count]),
    }
    if count:
        padded["boxes"][0, :count], padded["scores"][0, :count], padded["classes"][0, :count] = boxes, scores, classes
    return padded


BOXES = [[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]]


def test_identical_detections_in_another_order_agree():
    parity = detection_parity(outputs(BOXES, [0.9, 0.8], [0, 1]), outputs(BOXES[::-1], [0.8, 0.9], [1, 0]))
    assert parity.top1_agreement == 1.0 and parity.max_abs_diff == 0.0


def test_small_differences_are_measured_and_other_classes_never_pair():
    moved = [[0.1, 0.1, 0.4, 0.4003], BOXES[1]]
    parity = detection_parity(outputs(BOXES, [0.9, 0.8], [0, 1]), outputs(moved, [0.9001, 0.8], [0, 0]))
    assert parity.top1_agreement == 0.5 and parity.max_abs_diff == pytest.approx(3e-4, abs=1e-6)


def test_a_detection_on_one_side_only_lowers_the_agreement():
    parity = detection_parity(outputs(BOXES, [0.9, 0.8], [0, 1]), outputs(BOXES[:1], [0.9], [0]))
    assert parity.top1_agreement == 0.5
    assert detection_parity(outputs([], [], []), outputs([], [], [])).top1_agreement == 1.0


def test_boxes_clipped_to_no_area_still_pair():
    flat = [[0.0, 1.0, 0.3, 1.0]]
    assert detection_parity(outputs(flat, [0.5], [0]), outputs(flat, [0.5], [0])).top1_agreement == 1.0
