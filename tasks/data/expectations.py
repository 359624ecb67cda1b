"""The intake expectation suite: each rule a Great Expectations expectation with its thresholds as
suite parameters (filled from the settings at validation time)."""

from __future__ import annotations

import pandas as pd

from fpgaflow.tasks.settings import PipelineSettings

# rule name -> (table it checks, expectation class name, keyword arguments)
RULES: dict[str, tuple[str, str, dict]] = {
    "file_not_empty": ("files", "ExpectColumnValuesToBeBetween", {"column": "bytes", "min_value": 1}),
    "decodes_as_image": ("files", "ExpectColumnValuesToBeInSet", {"column": "decodes", "value_set": [True]}),
    "allowed_format": (
        "files",
        "ExpectColumnValuesToBeInSet",
        {"column": "format", "value_set": {"$PARAMETER": "allowed_formats"}},
    ),
    "min_width": ("files", "ExpectColumnValuesToBeBetween", {"column": "width", "min_value": {"$PARAMETER": "min_width"}}),
    "min_height": ("files", "ExpectColumnValuesToBeBetween", {"column": "height", "min_value": {"$PARAMETER": "min_height"}}),
    "no_duplicate_across_labels": (
        "files",
        "ExpectColumnValuesToBeBetween",
        {"column": "labels_with_same_content", "max_value": 1},
    ),
    "min_classes": ("classes", "ExpectTableRowCountToBeBetween", {"min_value": {"$PARAMETER": "min_classes"}}),
    "min_images_per_class": (
        "classes",
        "ExpectColumnValuesToBeBetween",
        {"column": "images", "min_value": {"$PARAMETER": "min_images_per_class"}},
    ),
    "max_class_imbalance": (
        "classes",
        "ExpectColumnValuesToBeBetween",
        {"column": "largest_class_ratio", "max_value": {"$PARAMETER": "max_class_imbalance"}},
    ),
}


def suite_parameters(settings: PipelineSettings) -> dict:
    return {
        "allowed_formats": list(settings.allowed_formats),
        "min_width": settings.min_image_width,
        "min_height": settings.min_image_height,
        "min_classes": settings.min_classes,
        "min_images_per_class": settings.min_images_per_class,
        "max_class_imbalance": settings.max_class_imbalance,
    }


def validation_tables(manifest: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The two tables the rules look at: one row per file, one row per class."""
    files = manifest.assign(labels_with_same_content=manifest.groupby("sha256")["label"].transform("nunique").astype(int))
    counts = manifest.groupby("label").size()
    classes = pd.DataFrame(
        {
            "label": counts.index,
            "images": counts.to_numpy(),
            "largest_class_ratio": (counts.max() / counts).to_numpy() if len(counts) else [],
        }
    )
    return {"files": files, "classes": classes}
