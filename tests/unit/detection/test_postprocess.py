"""The CPU stage: decoding + per-class NMS in numpy (the reference) and as the ONNX graph a node runs."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

from fpgaflow.tasks.config import DetectionConfig
from fpgaflow.tasks.detection.boxes import encode
from fpgaflow.tasks.detection.detect import detect, non_max_suppression
from fpgaflow.tasks.detection.geometry import flatten_heads, head_shapes
from tests.fixtures.detection_service import tiny_info

PRIORS = np.array([[0.25, 0.25, 0.5, 0.5], [0.3, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]], np.float32)
BOXES = np.array([[0.0, 0.0, 0.5, 0.5], [0.05, 0.0, 0.55, 0.5], [0.5, 0.5, 1.0, 1.0]], np.float32)


def logits_for(probabilities: list[list[float]]) -> np.ndarray:
    return np.log(np.asarray(probabilities, np.float32))[None]


def test_overlapping_boxes_of_one_class_keep_the_best():
    loc = encode(BOXES, PRIORS)[None]
    # background, class 0, class 1 per prior: prior 0 and 1 overlap (IoU 0.82) and both say class 0.
    logits = logits_for([[0.1, 0.8, 0.1], [0.1, 0.7, 0.2], [0.2, 0.1, 0.7]])
    outputs = detect(loc, logits, PRIORS, DetectionConfig(score_threshold=0.15, max_detections=4))
    assert outputs["num_detections"].tolist() == [3]
    np.testing.assert_allclose(outputs["scores"][0], [0.8, 0.7, 0.2, 0.0], rtol=1e-5)
    assert outputs["classes"][0].tolist() == [0, 1, 1, -1]  # prior 1's class 0 score was suppressed by prior 0
    np.testing.assert_allclose(outputs["boxes"][0, :3], BOXES[[0, 2, 1]], atol=1e-6)
    assert not outputs["boxes"][0, 3].any()


def test_nms_rules_match_onnx_nonmaxsuppression():
    boxes = np.array([[0, 0, 1, 1], [0, 0, 1, 0.5], [0.5, 0.5, 0.6, 0.6], [0.2, 0.2, 0.3, 0.3]], np.float32)
    scores = np.array([0.9, 0.8, 0.3, 0.9], np.float32)
    # IoU exactly 0.5 is kept, a score equal to the threshold is not, ties go to the lower index
    assert non_max_suppression(boxes, scores, 0.5, 0.3, 10).tolist() == [0, 3, 1]
    assert non_max_suppression(boxes, scores, 0.5, 0.3, 2).tolist() == [0, 3]


@pytest.fixture(scope="module")
def postprocess_session():
    from fpgaflow.tasks.detection.postprocess import postprocess_model

    return onnxruntime.InferenceSession(
        postprocess_model(
            tiny_info(), DetectionConfig(score_threshold=0.2, max_detections=12, max_per_class=5)
        ).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )


def test_onnx_graph_gives_the_reference_detections(postprocess_session):
    info = tiny_info()
    config = DetectionConfig(score_threshold=0.2, max_detections=12, max_per_class=5)
    rng = np.random.default_rng(7)
    heads = {name: rng.normal(0, 1.5, (5, *shape)).astype(np.float32) for name, shape in head_shapes(info).items()}
    names = [output.name for output in postprocess_session.get_outputs()]
    served = dict(zip(names, postprocess_session.run(names, heads)))
    reference = detect(*flatten_heads(heads, info.feature_maps, info.num_classes), info.layout.priors(), config)
    assert set(served) == set(reference)
    assert served["classes"].dtype == np.int64 and served["num_detections"].dtype == np.int64
    np.testing.assert_array_equal(served["num_detections"], reference["num_detections"])
    np.testing.assert_array_equal(served["classes"], reference["classes"])
    np.testing.assert_allclose(served["scores"], reference["scores"], atol=1e-6)
    np.testing.assert_allclose(served["boxes"], reference["boxes"], atol=1e-6)
    assert (reference["num_detections"] > 0).all() and (reference["num_detections"] <= 12).all()


def test_onnx_graph_pads_when_nothing_scores_high_enough(postprocess_session):
    info = tiny_info()
    heads = {name: np.zeros((2, *shape), np.float32) for name, shape in head_shapes(info).items()}
    for name in heads:
        if name.startswith("conf"):
            heads[name][..., 0::3] = 10.0  # background wins everywhere
    names = [output.name for output in postprocess_session.get_outputs()]
    served = dict(zip(names, postprocess_session.run(names, heads)))
    assert served["num_detections"].tolist() == [0, 0]
    assert (served["classes"] == -1).all() and not served["scores"].any() and not served["boxes"].any()
