"""IoU, box encoding with variances, and matching default boxes to objects."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaflow.tasks.detection.boxes import centres_to_corners, decode, encode, iou, match


def test_iou_of_hand_computed_boxes():
    first = np.array([[0.0, 0.0, 0.5, 0.5]])
    second = np.array([[0.25, 0.25, 0.75, 0.75], [0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]])
    # overlap 0.25 x 0.25 = 1/16, union 2 * 1/4 - 1/16 = 7/16; touching corners; identical
    np.testing.assert_allclose(iou(first, second), [[1 / 7, 0.0, 1.0]], rtol=1e-6)


def test_encode_then_decode_gives_the_boxes_back():
    priors = np.array([[0.3, 0.4, 0.2, 0.1], [0.7, 0.6, 0.3, 0.5]], np.float32)
    boxes = np.array([[0.1, 0.2, 0.45, 0.5], [0.5, 0.4, 0.9, 0.95]], np.float32)
    np.testing.assert_allclose(decode(encode(boxes, priors), priors), boxes, atol=1e-6)


def test_offsets_use_the_variances():
    priors = np.array([[0.5, 0.5, 0.2, 0.2]], np.float32)
    box = centres_to_corners(np.array([[0.52, 0.5, 0.2, 0.4]], np.float32))
    # (0.02 / (0.2 * 0.1), 0, log(1) / 0.2, log(2) / 0.2)
    np.testing.assert_allclose(encode(box, priors), [[1.0, 0.0, 0.0, np.log(2) / 0.2]], rtol=1e-5, atol=1e-6)


def test_decoded_boxes_are_clipped_to_the_image():
    priors = np.array([[0.05, 0.95, 0.2, 0.2]], np.float32)
    np.testing.assert_allclose(decode(np.zeros((1, 4)), priors), [[0.0, 0.85, 0.15, 1.0]], atol=1e-6)


def test_matching_by_threshold_and_best_prior_per_object():
    priors = np.array(
        [
            [0.25, 0.25, 0.5, 0.5],  # the first object exactly
            [0.3, 0.3, 0.5, 0.5],  # overlaps the first object by IoU ~0.64
            [0.75, 0.75, 0.5, 0.5],  # far from both
            [0.9, 0.1, 0.1, 0.1],  # the best (but weak) prior of the small second object
        ],
        np.float32,
    )
    boxes = np.array([[0.0, 0.0, 0.5, 0.5], [0.8, 0.0, 1.0, 0.3]], np.float32)
    offsets, classes = match(boxes, np.array([2, 5]), priors, threshold=0.5)
    assert classes.tolist() == [2, 2, 0, 5]
    np.testing.assert_allclose(decode(offsets[[0, 3]], priors[[0, 3]]), boxes, atol=1e-6)


def test_an_image_without_objects_is_all_background():
    offsets, classes = match(np.zeros((0, 4)), np.zeros(0), np.full((3, 4), 0.5, np.float32))
    assert classes.tolist() == [0, 0, 0] and not offsets.any()


def test_labels_must_be_one_based():
    with pytest.raises(ValueError, match="0 is the background"):
        match(np.array([[0, 0, 1, 1]]), np.array([0]), np.full((1, 4), 0.5, np.float32))
