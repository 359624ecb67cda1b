"""The detector's CPU stage in numpy: decode the head outputs, per-class non-maximum suppression, top K.

This is the reference :mod:`fpgaflow.tasks.detection.postprocess` builds as an ONNX graph (what a node runs), with
the same rules as ONNX ``NonMaxSuppression`` in onnxruntime, so both give the same detections:

1. box offsets are decoded against the priors and clipped to the image; class logits go through a
   softmax (column 0 is the background);
2. per image and object class, boxes scoring above ``score_threshold`` are taken by falling score
   (ties: lower prior index first), a box is dropped when its IoU with a kept box of the class is
   above ``iou_threshold``, and at most ``max_per_class`` are kept;
3. the kept (class, box) pairs of an image are ranked by score (ties: lower class, then lower prior
   index) and the first ``max_detections`` returned.

Outputs, ``K = max_detections``: ``boxes`` [N, K, 4] normalised ``[ymin, xmin, ymax, xmax]``,
``scores`` [N, K], ``classes`` [N, K] int64 (index into the class names), ``num_detections`` [N]
int64. Entries past ``num_detections`` are padding: score 0, box 0, class -1.
"""

from __future__ import annotations

import numpy as np

from fpgaflow.fpga_runtime.protocol import BOXES_OUTPUT as BOXES
from fpgaflow.fpga_runtime.protocol import CLASSES_OUTPUT as CLASSES
from fpgaflow.fpga_runtime.protocol import NUM_DETECTIONS_OUTPUT as NUM_DETECTIONS
from fpgaflow.fpga_runtime.protocol import SCORES_OUTPUT as SCORES
from fpgaflow.tasks.config import DetectionConfig
from fpgaflow.tasks.detection.boxes import decode, iou

PADDING_CLASS = -1


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float32)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


def non_max_suppression(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, score_threshold: float, max_boxes: int
) -> np.ndarray:
    """Indices of the boxes ``[P, 4]`` one class keeps, best first (ONNX NonMaxSuppression's rules)."""
    candidates = np.flatnonzero(scores > np.float32(score_threshold))
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    kept: list[int] = []
    while len(order) and len(kept) < max_boxes:  # keep the best left, drop every box it overlaps too much
        best, order = order[0], order[1:]
        kept.append(int(best))
        order = order[iou(boxes[best : best + 1], boxes[order])[0] <= np.float32(iou_threshold)]
    return np.asarray(kept, dtype=np.int64)


def detect(loc: np.ndarray, logits: np.ndarray, priors: np.ndarray, config: DetectionConfig) -> dict[str, np.ndarray]:
    """Box offsets ``[N, P, 4]`` and class logits ``[N, P, classes + 1]`` → the four detection outputs."""
    loc, logits = np.asarray(loc, np.float32), np.asarray(logits, np.float32)
    if loc.ndim != 3 or loc.shape[1:] != (len(priors), 4) or logits.shape[:2] != loc.shape[:2]:
        raise ValueError(
            f"expected offsets [N, {len(priors)}, 4] and logits [N, {len(priors)}, C]; got {loc.shape} and {logits.shape}"
        )
    count, priors_count, columns = logits.shape
    keep = min(config.max_detections, (columns - 1) * priors_count)
    outputs = {
        BOXES: np.zeros((count, keep, 4), np.float32),
        SCORES: np.zeros((count, keep), np.float32),
        CLASSES: np.full((count, keep), PADDING_CLASS, np.int64),
        NUM_DETECTIONS: np.zeros(count, np.int64),
    }
    boxes, probabilities = decode(loc, priors), softmax(logits)
    for image in range(count):
        kept_scores = np.zeros((columns - 1, priors_count), np.float32)
        for column in range(1, columns):
            scores = probabilities[image, :, column]
            chosen = non_max_suppression(boxes[image], scores, config.iou_threshold, config.score_threshold, config.max_per_class)
            kept_scores[column - 1, chosen] = scores[chosen]
        flat = kept_scores.ravel()
        ranked = np.argsort(-flat, kind="stable")[:keep]
        valid = ranked[flat[ranked] > 0]
        found = len(valid)
        outputs[BOXES][image, :found] = boxes[image, valid % priors_count]
        outputs[SCORES][image, :found] = flat[valid]
        outputs[CLASSES][image, :found] = valid // priors_count
        outputs[NUM_DETECTIONS][image] = found
    return outputs
