"""Box arithmetic of SSD: IoU, matching default boxes to ground truth, encoding offsets with variances.

Corner boxes are ``[ymin, xmin, ymax, xmax]``; priors are centre boxes ``(cy, cx, h, w)``; both
normalised to the image. The encoding of a box ``g`` against a prior ``p`` (what the loc head learns)::

    t_y = (g_cy - p_cy) / (p_h * v_c)     t_x = (g_cx - p_cx) / (p_w * v_c)
    t_h = log(g_h / p_h) / v_s            t_w = log(g_w / p_w) / v_s

with the variances ``v_c = 0.1``, ``v_s = 0.2`` of SSD300.
"""

from __future__ import annotations

import numpy as np

CENTRE_VARIANCE = 0.1
SIZE_VARIANCE = 0.2
BACKGROUND = 0
# Smallest box side (a fraction of the image) the encoding accepts: log(0) has no offset.
MIN_SIDE = 1e-6


def corners_to_centres(boxes: np.ndarray) -> np.ndarray:
    """``[..., 4]`` ``(ymin, xmin, ymax, xmax)`` → ``(cy, cx, h, w)``."""
    boxes = np.asarray(boxes, dtype=np.float32)
    return np.concatenate([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], axis=-1)


def centres_to_corners(boxes: np.ndarray) -> np.ndarray:
    """``[..., 4]`` ``(cy, cx, h, w)`` → ``(ymin, xmin, ymax, xmax)``."""
    boxes = np.asarray(boxes, dtype=np.float32)
    return np.concatenate([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], axis=-1)


def area(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float32)
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of corner boxes ``[A, 4]`` and ``[B, 4]`` → ``[A, B]`` (0 where both are empty)."""
    first, second = np.asarray(first, dtype=np.float32), np.asarray(second, dtype=np.float32)
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    union = area(first)[:, None] + area(second)[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def encode(boxes: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Corner boxes ``[P, 4]`` as offsets ``(t_y, t_x, t_h, t_w)`` from their priors ``[P, 4]``."""
    centres = corners_to_centres(boxes)
    sizes = np.maximum(centres[:, 2:], MIN_SIDE)
    offsets = (centres[:, :2] - priors[:, :2]) / (priors[:, 2:] * CENTRE_VARIANCE)
    scales = np.log(sizes / priors[:, 2:]) / SIZE_VARIANCE
    return np.concatenate([offsets, scales], axis=1).astype(np.float32)


def decode(offsets: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Offsets ``[..., P, 4]`` applied to priors ``[P, 4]`` → corner boxes ``[..., P, 4]``, clipped to the image."""
    offsets = np.asarray(offsets, dtype=np.float32)
    priors = np.asarray(priors, dtype=np.float32)
    centres = priors[:, :2] + offsets[..., :2] * np.float32(CENTRE_VARIANCE) * priors[:, 2:]
    sizes = priors[:, 2:] * np.exp(offsets[..., 2:] * np.float32(SIZE_VARIANCE))
    corners = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=-1)
    return np.clip(corners, 0, 1).astype(np.float32)


def match(boxes: np.ndarray, labels: np.ndarray, priors: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Training targets of one image: per prior the encoded offsets ``[P, 4]`` and the class ``[P]`` (0 = background).

    A prior is positive when its IoU with a ground-truth box is at least ``threshold`` (it takes the
    box it overlaps most), and every ground-truth box also claims the prior it overlaps most, so no
    object is left without a positive. ``labels`` are 1-based class indices (0 is the background).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
    if len(labels) and labels.min() <= BACKGROUND:
        raise ValueError("object labels are 1-based class indices: 0 is the background")
    count = len(priors)
    if not len(boxes):
        return np.zeros((count, 4), np.float32), np.zeros(count, np.int64)
    overlaps = iou(boxes, centres_to_corners(priors))  # [G, P]
    best_box = overlaps.argmax(axis=0)
    best_overlap = overlaps.max(axis=0)
    for index, prior in enumerate(overlaps.argmax(axis=1)):
        best_box[prior] = index
        best_overlap[prior] = 2.0  # above any threshold: the prior is this box's
    classes = np.where(best_overlap >= threshold, labels[best_box], BACKGROUND).astype(np.int64)
    return encode(boxes[best_box], priors), classes
