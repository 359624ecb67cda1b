"""A detector's answer for one image, as data and as a picture (Pillow only: runs in the serving install).

:class:`Detections` holds the valid detections of one image (the padding past ``num_detections``
removed), best first; :func:`draw_detections` draws them with their labels and scores onto the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fpgaflow.fpga_runtime.protocol import BOXES_OUTPUT, CLASSES_OUTPUT, NUM_DETECTIONS_OUTPUT, SCORES_OUTPUT

PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (128, 128, 0),
    (0, 128, 128),
    (170, 110, 40),
)


@dataclass(frozen=True)
class Detections:
    """One image's detections: ``boxes`` [K, 4] normalised ``[ymin, xmin, ymax, xmax]``, ``scores`` [K],
    ``classes`` [K] (indices into ``class_names``), best first."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def labels(self) -> list[str]:
        """The class name of each detection (its index when the names are unknown)."""
        return [self.class_names[index] if 0 <= index < len(self.class_names) else str(index) for index in self.classes]

    def above(self, min_score: float) -> Detections:
        """Only the detections scoring at least ``min_score``."""
        keep = self.scores >= min_score
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep], self.class_names)

    def pixel_boxes(self, width: int, height: int) -> np.ndarray:
        """Boxes as pixels ``[xmin, ymin, xmax, ymax]`` of a ``width`` x ``height`` image."""
        scale = np.asarray([width, height, width, height], np.float32)
        return self.boxes[:, [1, 0, 3, 2]] * scale

    def to_dict(self, width: int | None = None, height: int | None = None) -> list[dict]:
        """One dict per detection (``label``, ``class``, ``score``, ``box``; pixel boxes when the size is given)."""
        boxes = self.pixel_boxes(width, height) if width and height else self.boxes
        return [
            {"label": label, "class": int(index), "score": float(score), "box": [round(float(value), 4) for value in box]}
            for label, index, score, box in zip(self.labels, self.classes, self.scores, boxes)
        ]


def detections_from_outputs(outputs: Mapping[str, np.ndarray], class_names: Sequence[str] = ()) -> list[Detections]:
    """The four detection outputs of a batch → one :class:`Detections` per image."""
    missing = [name for name in (BOXES_OUTPUT, SCORES_OUTPUT, CLASSES_OUTPUT, NUM_DETECTIONS_OUTPUT) if name not in outputs]
    if missing:
        raise ValueError(f"detection outputs {missing} are missing; got {sorted(outputs)}")
    counts = np.asarray(outputs[NUM_DETECTIONS_OUTPUT], np.int64).reshape(-1)
    boxes = np.asarray(outputs[BOXES_OUTPUT], np.float32)
    scores = np.asarray(outputs[SCORES_OUTPUT], np.float32)
    classes = np.asarray(outputs[CLASSES_OUTPUT], np.int64)
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:2] or classes.shape != scores.shape:
        raise ValueError(
            f"expected boxes [N, K, 4], scores [N, K], classes [N, K]; got {boxes.shape}, {scores.shape}, {classes.shape}"
        )
    if len(counts) != len(boxes) or (counts < 0).any() or (counts > boxes.shape[1]).any():
        raise ValueError(
            f"num_detections {counts.tolist()} does not fit {len(boxes)} images of at most {boxes.shape[1]} detections"
        )
    names = tuple(class_names)
    return [Detections(boxes[i, :count], scores[i, :count], classes[i, :count], names) for i, count in enumerate(counts)]


def draw_detections(image: Image.Image, detections: Detections, line_width: int | None = None) -> Image.Image:
    """A copy of ``image`` with each detection's box and ``label score`` drawn on it."""
    picture = image.convert("RGB")
    draw = ImageDraw.Draw(picture)
    width = line_width or max(1, round(min(picture.size) / 150))
    font = ImageFont.load_default()
    for box, label, index, score in zip(
        detections.pixel_boxes(*picture.size), detections.labels, detections.classes, detections.scores
    ):
        colour = PALETTE[int(index) % len(PALETTE)]
        left, top, right, bottom = (float(value) for value in box)
        draw.rectangle((left, top, right, bottom), outline=colour, width=width)
        text = f"{label} {score:.2f}"
        text_box = draw.textbbox((left, top), text, font=font)
        text_height = text_box[3] - text_box[1]
        origin = (left, top - text_height - 2 if top - text_height - 2 >= 0 else top)
        background = draw.textbbox(origin, text, font=font)
        draw.rectangle((background[0] - 1, background[1] - 1, background[2] + 1, background[3] + 1), fill=colour)
        draw.text(origin, text, fill=(255, 255, 255), font=font)
    return picture
