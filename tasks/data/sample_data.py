"""Real labelled images from data that ships with installed packages (scikit-learn's digits)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fpgaflow.tasks.files import replace_directory_atomic


def digit_images(size: int) -> tuple[list[Image.Image], list[int]]:
    """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels) as RGB images of ``size`` px."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = []
    for pixels in digits.images:
        grey = Image.fromarray(np.uint8(255 - pixels * (255 / 16)), mode="L")  # dark ink on white paper
        images.append(grey.resize((size, size), Image.Resampling.BICUBIC).convert("RGB"))
    return images, [int(label) for label in digits.target]


def write_sample_data(directory: Path, size: int = 64, per_class: int | None = None) -> dict[str, int]:
    """Write ``directory/<digit>/<index>.jpg``; replaces the folder atomically. Returns images per class."""
    if size < 8:
        raise ValueError(f"image size must be at least 8 pixels, got {size}")
    images, labels = digit_images(size)
    counts: dict[str, int] = {}

    def write(staging: Path) -> None:
        for index, (image, label) in enumerate(zip(images, labels)):
            name = str(label)
            if per_class is not None and counts.get(name, 0) >= per_class:
                continue
            (staging / name).mkdir(exist_ok=True)
            image.save(staging / name / f"{index:04d}.jpg", format="JPEG", quality=95)
            counts[name] = counts.get(name, 0) + 1

    replace_directory_atomic(write, Path(directory))
    return dict(sorted(counts.items()))
