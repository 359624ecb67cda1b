"""Do two runs of a detector give the same detections? (conversion parity, the smoke test)

Detections are compared as sets: each detection of the reference, best first, is paired with the
candidate's nearest detection of the same class, if no corner of the two boxes is more than 1% of
the image side apart (a twin; unlike an IoU, this also pairs boxes clipped to no area).
``top1_agreement`` is the share of detections that found a twin (of the larger of the two
counts per image) and ``max_abs_diff`` the largest box-corner or score difference between twins. A
box whose score sits on the score threshold, or that ties at the K-th place, may appear on one side
only; that lowers the agreement a little instead of failing the comparison outright.
"""

from __future__ import annotations

import numpy as np

from fpgaflow.tasks.conversion.onnx_stages import StageParity
from fpgaflow.tasks.detection.detect import BOXES, CLASSES, NUM_DETECTIONS, SCORES

TWIN_DISTANCE = 0.01  # largest corner difference of twins, a fraction of the image side


def detection_parity(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> StageParity:
    """Agreement of two sets of detection outputs (see the module docstring)."""
    twins, total, largest = 0, 0, 0.0
    for image, (ref_count, cand_count) in enumerate(zip(reference[NUM_DETECTIONS], candidate[NUM_DETECTIONS])):
        total += max(int(ref_count), int(cand_count))
        ref_boxes, cand_boxes = reference[BOXES][image, :ref_count], candidate[BOXES][image, :cand_count]
        ref_classes, cand_classes = reference[CLASSES][image, :ref_count], candidate[CLASSES][image, :cand_count]
        if not ref_count or not cand_count:
            continue
        distance = np.abs(ref_boxes[:, None, :] - cand_boxes[None, :, :]).max(axis=-1)
        distance = np.where(ref_classes[:, None] == cand_classes[None, :], distance, np.inf)
        taken = np.zeros(int(cand_count), bool)
        for row in np.argsort(-reference[SCORES][image, :ref_count], kind="stable"):
            available = np.where(taken, np.inf, distance[row])
            best = int(available.argmin())
            if available[best] <= TWIN_DISTANCE:
                taken[best] = True
                twins += 1
                difference = max(
                    float(np.abs(ref_boxes[row] - cand_boxes[best]).max()),
                    abs(float(reference[SCORES][image, row]) - float(candidate[SCORES][image, best])),
                )
                largest = max(largest, difference)
    agreement = twins / total if total else 1.0
    return StageParity(max_abs_diff=largest, output_scale=1.0, scaled_diff=largest, top1_agreement=agreement)
