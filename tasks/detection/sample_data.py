"""A real-looking detection dataset from data that ships with scikit-learn: handwritten digits on canvases.

Each image is a noisy, unevenly lit paper-like canvas (96-160 px a side) with one to three
handwritten digits (24-48 px) pasted where they do not overlap; each digit's box is the tight box
around its ink. Written in the detection layout of :mod:`fpgaflow.tasks.detection.intake` (``labels.txt``,
``images/``, ``annotations/`` as JSON), seeded, so the same arguments give the same files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from fpgaflow.tasks.data.sample_data import digit_images
from fpgaflow.tasks.detection.annotations import AnnotatedObject, Annotation, write_json
from fpgaflow.tasks.detection.intake import ANNOTATIONS_DIR, IMAGES_DIR, LABELS_FILE
from fpgaflow.tasks.files import replace_directory_atomic

CANVAS_SIZES = (96, 160)
DIGIT_SIZES = (24, 48)
MAX_DIGITS = 3
INK_LEVEL = 128  # a pixel darker than this is ink
PLACEMENT_ATTEMPTS = 50


def _canvas(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Light paper with a brightness gradient and grain, as float grey levels [H, W]."""
    y, x = np.mgrid[0:height, 0:width]
    gradient = rng.uniform(-25, 25) * x / width + rng.uniform(-25, 25) * y / height
    return np.clip(rng.uniform(200, 245) + gradient + rng.normal(0, 10, (height, width)), 0, 255)


def _ink_box(digit: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, columns = np.flatnonzero((digit < INK_LEVEL).any(axis=1)), np.flatnonzero((digit < INK_LEVEL).any(axis=0))
    if not len(rows):
        return None
    return int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1


def _overlaps(box: tuple[int, int, int, int], placed: list[tuple[int, int, int, int]]) -> bool:
    return any(box[0] < other[2] and other[0] < box[2] and box[1] < other[3] and other[1] < box[3] for other in placed)


def compose_image(
    rng: np.random.Generator, digits: Sequence[Image.Image], labels: Sequence[int], pool: Sequence[int]
) -> tuple[Image.Image, Annotation]:
    """One canvas with 1..MAX_DIGITS digits drawn from ``pool`` (indices into ``digits``), and its annotation."""
    width, height = (int(rng.integers(CANVAS_SIZES[0], CANVAS_SIZES[1] + 1)) for _ in range(2))
    canvas = _canvas(rng, width, height)
    objects: list[AnnotatedObject] = []
    placed: list[tuple[int, int, int, int]] = []
    for _ in range(int(rng.integers(1, MAX_DIGITS + 1))):
        index = int(pool[int(rng.integers(len(pool)))])
        side = int(rng.integers(DIGIT_SIZES[0], DIGIT_SIZES[1] + 1))
        digit = np.asarray(digits[index].convert("L").resize((side, side), Image.Resampling.BICUBIC), dtype=np.float64)
        ink = _ink_box(digit)
        if ink is None:
            continue
        for _ in range(PLACEMENT_ATTEMPTS):
            left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
            box = (left + ink[0], top + ink[1], left + ink[2], top + ink[3])
            if not _overlaps(box, placed):
                break
        else:
            continue
        region = canvas[top : top + side, left : left + side]
        darkness = rng.uniform(0.7, 1.0)
        canvas[top : top + side, left : left + side] = np.minimum(region, 255 - (255 - digit) * darkness)
        placed.append(box)
        objects.append(AnnotatedObject(str(labels[index]), (float(box[0]), float(box[1]), float(box[2]), float(box[3]))))
    tint = rng.uniform(0.9, 1.0, 3)
    pixels = np.clip(canvas[..., None] * tint, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB"), Annotation(width, height, tuple(objects))


def write_detection_sample_data(
    directory: Path, count: int = 300, digits: Sequence[int] = tuple(range(10)), seed: int = 0
) -> dict[str, int]:
    """Write ``count`` annotated images of the given ``digits``; replaces the folder atomically. Returns objects per label."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    wanted = sorted({int(digit) for digit in digits})
    if not wanted or any(not 0 <= digit <= 9 for digit in wanted):
        raise ValueError(f"digits must be a non-empty selection of 0-9, got {list(digits)}")
    images, labels = digit_images(max(DIGIT_SIZES))
    pool = [index for index, label in enumerate(labels) if label in wanted]
    rng = np.random.default_rng(seed)
    counts = {str(digit): 0 for digit in wanted}

    def write(staging: Path) -> None:
        (staging / IMAGES_DIR).mkdir()
        (staging / ANNOTATIONS_DIR).mkdir()
        (staging / LABELS_FILE).write_text("".join(f"{digit}\n" for digit in wanted))
        for number in range(count):
            image, annotation = compose_image(rng, images, labels, pool)
            stem = f"{number:05d}"
            image.save(staging / IMAGES_DIR / f"{stem}.jpg", format="JPEG", quality=92)
            write_json(staging / ANNOTATIONS_DIR / f"{stem}.json", annotation)
            for item in annotation.objects:
                counts[item.label] += 1

    replace_directory_atomic(write, Path(directory))
    return counts
