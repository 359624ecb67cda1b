"""Ground truth of annotated images, as the mAP counts it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fpgaflow.tasks.detection.annotations import read_annotation
from fpgaflow.tasks.detection.average_precision import GroundTruth
from fpgaflow.tasks.errors import PipelineStepError


def load_ground_truth(rows: pd.DataFrame, class_names: Sequence[str]) -> list[GroundTruth]:
    """Each row's annotation as normalised ``[ymin, xmin, ymax, xmax]`` boxes and 0-based class indices."""
    index = {name: position for position, name in enumerate(class_names)}
    truths = []
    for path in rows["annotation"]:
        annotation = read_annotation(Path(path))
        unknown = sorted({item.label for item in annotation.objects} - set(index))
        if unknown:
            raise PipelineStepError(f"{path} names labels {unknown} that are not among the class names {list(class_names)}")
        scale = np.asarray([annotation.height, annotation.width] * 2, np.float32)
        boxes = np.asarray([[item.box[1], item.box[0], item.box[3], item.box[2]] for item in annotation.objects], np.float32)
        truths.append(
            GroundTruth(
                boxes=(boxes / scale).reshape(-1, 4),
                classes=np.asarray([index[item.label] for item in annotation.objects], np.int64),
                difficult=np.asarray([item.difficult for item in annotation.objects], bool),
            )
        )
    return truths
