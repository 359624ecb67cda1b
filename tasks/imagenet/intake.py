"""The ImageNet classifier's data: a folder of unlabelled images (any layout) to calibrate and compare formats on.

Every image must decode; they are fingerprinted like a training set and all listed in the split
manifest as the ``test`` split (with no label), so the stages read them like any held-out images.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from fpgaflow.fpga_runtime.errors import InvalidInput
from fpgaflow.fpga_runtime.preprocessing import decode_image
from fpgaflow.tasks.data.intake import IntakeResult, Violation
from fpgaflow.tasks.errors import DataValidationError
from fpgaflow.tasks.imagenet.classifier import imagenet_class_names
from fpgaflow.tasks.numerics.formats import IMAGE_SUFFIXES
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

RULES: dict[str, tuple[str, str, dict]] = {
    "decodes_as_image": ("files", "every image decodes", {}),
    "min_images": ("files", "at least one image", {}),
}
SPLIT = "test"


def intake_calibration_images(data_dir: Path, settings: PipelineSettings | None = None) -> IntakeResult:
    settings = settings or get_pipeline_settings()
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        raise DataValidationError(f"calibration folder {data_dir} does not exist")
    paths = sorted(
        path for path in data_dir.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    )
    violations = []
    digest = hashlib.sha256()
    for path in paths:
        content = path.read_bytes()
        try:
            decode_image(content)
        except InvalidInput as error:
            violations.append(Violation("decodes_as_image", str(path), str(error)))
        digest.update(f"{path.relative_to(data_dir)}|{hashlib.sha256(content).hexdigest()}\n".encode())
    if not paths:
        violations.append(Violation("min_images", str(data_dir), f"no {'/'.join(IMAGE_SUFFIXES)} files below it"))
    if violations:
        raise DataValidationError(
            "the calibration images cannot be used: " + "; ".join(f"{item.file}: {item.detail}" for item in violations),
            violations=violations,
        )
    fingerprint = digest.hexdigest()
    directory = settings.home / "datasets" / f"calibration-{fingerprint[:16]}"
    directory.mkdir(parents=True, exist_ok=True)
    split_path, report_path = directory / "splits.csv", directory / "validation.json"
    report_path.write_text(json.dumps({"success": True, "rules": list(RULES), "images": len(paths)}, indent=1) + "\n")
    pd.DataFrame({"path": [str(path) for path in paths], "label": "", "split": SPLIT}).to_csv(split_path, index=False)
    class_names = imagenet_class_names(settings)
    return IntakeResult(
        data_dir=str(data_dir),
        dataset_fingerprint=fingerprint,
        num_images=len(paths),
        num_classes=len(class_names),
        class_names=class_names,
        validation_success=True,
        report_path=str(report_path),
        split_path=str(split_path),
        split_counts={SPLIT: len(paths)},
    )


def intake_caption(result: IntakeResult) -> str:
    return f"{result.num_images} calibration images (unlabelled), fingerprint {result.dataset_fingerprint[:16]}"
