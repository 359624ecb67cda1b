"""Detection data intake: scan an images + annotations folder, validate it with Great Expectations, split it.

Layout of a detection dataset::

    DATA_DIR/labels.txt                 the known labels, one per line, in class-index order
    DATA_DIR/images/<stem>.jpg          JPEG, PNG or BMP images
    DATA_DIR/annotations/<stem>.json    one annotation file per image (or <stem>.xml, Pascal VOC)

(formats: :mod:`fpgaflow.tasks.detection.annotations`). The rules, each reported with the offending file and why:
every image non-empty, decodable, of an allowed format and large enough; every image annotated by
exactly one readable file whose size matches the decoded image (EXIF orientation applied, as the
model sees it); every box inside its image with a positive area and a known label; every label with
enough objects; enough images. The split is seeded and content-ordered like the classifier's, per
image (an image holds several labels, so it is not stratified).
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pandas as pd
from PIL import Image

from fpgaflow.fpga_runtime.errors import InvalidInput
from fpgaflow.fpga_runtime.preprocessing import decode_image
from fpgaflow.tasks.data.intake import IntakeResult, Violation, ensure_valid, run_expectations, write_report, write_splits
from fpgaflow.tasks.data.manifest import undecoded_row
from fpgaflow.tasks.detection.annotations import ANNOTATION_SUFFIXES, Annotation, AnnotationError, read_annotation
from fpgaflow.tasks.errors import DataValidationError
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

LABELS_FILE = "labels.txt"
IMAGES_DIR = "images"
ANNOTATIONS_DIR = "annotations"
RESERVED_LABELS = ("background",)
SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ("path", "relpath", "annotation", "split", "width", "height", "objects")

log = logging.getLogger(__name__)

# rule name -> (table it checks, expectation class name, keyword arguments)
RULES: dict[str, tuple[str, str, dict]] = {
    "file_not_empty": ("images", "ExpectColumnValuesToBeBetween", {"column": "bytes", "min_value": 1}),
    "decodes_as_image": ("images", "ExpectColumnValuesToBeInSet", {"column": "decodes", "value_set": [True]}),
    "allowed_format": (
        "images",
        "ExpectColumnValuesToBeInSet",
        {"column": "format", "value_set": {"$PARAMETER": "allowed_formats"}},
    ),
    "min_width": ("images", "ExpectColumnValuesToBeBetween", {"column": "width", "min_value": {"$PARAMETER": "min_width"}}),
    "min_height": ("images", "ExpectColumnValuesToBeBetween", {"column": "height", "min_value": {"$PARAMETER": "min_height"}}),
    "has_annotation": ("images", "ExpectColumnValuesToBeInSet", {"column": "annotated", "value_set": [True]}),
    "annotation_readable": ("images", "ExpectColumnValuesToBeInSet", {"column": "annotation_readable", "value_set": [True]}),
    "annotation_size_matches_image": ("images", "ExpectColumnValuesToBeInSet", {"column": "size_matches", "value_set": [True]}),
    "min_images": ("images", "ExpectTableRowCountToBeBetween", {"min_value": {"$PARAMETER": "min_images"}}),
    "box_inside_image": ("objects", "ExpectColumnValuesToBeInSet", {"column": "inside", "value_set": [True]}),
    "box_has_area": ("objects", "ExpectColumnValuesToBeInSet", {"column": "has_area", "value_set": [True]}),
    "known_label": ("objects", "ExpectColumnValuesToBeInSet", {"column": "label", "value_set": {"$PARAMETER": "known_labels"}}),
    "min_objects_per_label": (
        "labels",
        "ExpectColumnValuesToBeBetween",
        {"column": "objects", "min_value": {"$PARAMETER": "min_objects"}},
    ),
}
KEY_COLUMNS = {"images": "relpath", "objects": "object", "labels": "label"}
DETAIL_COLUMNS = {
    "decodes_as_image": "decode_error",
    "has_annotation": "annotation_error",
    "annotation_readable": "annotation_error",
    "annotation_size_matches_image": "size_detail",
    "box_inside_image": "box_detail",
    "box_has_area": "box_detail",
}


@dataclass
class DetectionIntakeResult(IntakeResult):
    num_objects: int = field(kw_only=True)

    summary_keys: ClassVar[tuple[str, ...]] = (
        "dataset_fingerprint",
        "num_images",
        "num_objects",
        "num_classes",
        "validation_success",
    )


def read_labels(data_dir: Path) -> list[str]:
    """The known labels of ``data_dir/labels.txt`` (blank lines ignored); a clear error when unusable."""
    path = Path(data_dir) / LABELS_FILE
    if not path.is_file():
        raise DataValidationError(f"{path} is missing: list the object labels of the dataset in it, one per line")
    labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not labels:
        raise DataValidationError(f"{path} lists no labels: write the object labels in it, one per line")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    reserved = [label for label in labels if label.lower() in RESERVED_LABELS]
    if duplicates or reserved:
        problem = (
            f"lists {duplicates} more than once"
            if duplicates
            else f"uses the reserved label {reserved[0]!r} (class 0 is the background)"
        )
        raise DataValidationError(f"{path} {problem}")
    return labels


def _describe_image(path: Path) -> dict:
    """Size as the model sees it (EXIF orientation applied), format and hash; properties stay None when it does not decode."""
    data = path.read_bytes()
    row = undecoded_row(data, ("width", "height", "format"))
    if not data:
        return row
    try:
        image = decode_image(data)
        with Image.open(io.BytesIO(data)) as raw:
            image_format = raw.format or ""
    except InvalidInput as error:
        return {**row, "decodes": False, "decode_error": str(error)}
    return {**row, "width": image.width, "height": image.height, "format": image_format, "decodes": True}


def _annotation_file(annotations_dir: Path, stem: str) -> tuple[Path | None, str]:
    found = [
        annotations_dir / f"{stem}{suffix}" for suffix in ANNOTATION_SUFFIXES if (annotations_dir / f"{stem}{suffix}").is_file()
    ]
    if not found:
        return None, f"no {ANNOTATIONS_DIR}/{stem}.json or {ANNOTATIONS_DIR}/{stem}.xml"
    if len(found) > 1:
        return None, f"two annotation files for one image: {', '.join(path.name for path in found)}; keep one"
    return found[0], ""


def scan_dataset(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The images table (one row per image) and the objects table (one row per annotated object)."""
    data_dir = Path(data_dir)
    images_dir, annotations_dir = data_dir / IMAGES_DIR, data_dir / ANNOTATIONS_DIR
    for folder in (images_dir, annotations_dir):
        if not folder.is_dir():
            raise DataValidationError(
                f"{data_dir} is not a detection dataset: {folder.name}/ is missing (expected {LABELS_FILE}, "
                f"{IMAGES_DIR}/ and {ANNOTATIONS_DIR}/ with one <image stem>.json or .xml per image)"
            )
    images, objects = [], []
    for path in sorted(p for p in images_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
        row = {"path": str(path), "relpath": path.relative_to(data_dir).as_posix(), **_describe_image(path)}
        annotation_path, problem = _annotation_file(annotations_dir, path.stem)
        annotation: Annotation | None = None
        if annotation_path is not None:
            try:
                annotation = read_annotation(annotation_path)
            except (AnnotationError, OSError) as error:
                problem = f"{annotation_path.name}: {error}"
        decoded = row["decodes"] is True
        size_mismatch = (
            f"annotation says {annotation.width}x{annotation.height}, the image decodes to {row['width']}x{row['height']}"
            if annotation is not None and decoded and (annotation.width, annotation.height) != (row["width"], row["height"])
            else ""
        )
        row.update(
            annotation=str(annotation_path) if annotation_path else "",
            annotation_sha256=hashlib.sha256(annotation_path.read_bytes()).hexdigest() if annotation_path else "",
            annotated=annotation_path is not None,
            annotation_readable=annotation is not None or annotation_path is None,
            annotation_error=problem,
            size_matches=not size_mismatch,
            size_detail=size_mismatch,
            objects=len(annotation.objects) if annotation else 0,
        )
        images.append(row)
        if annotation is not None:
            width, height = (row["width"], row["height"]) if decoded else (annotation.width, annotation.height)
            for index, item in enumerate(annotation.objects):
                objects.append(_object_row(row["relpath"], Path(row["annotation"]).name, index, item, width, height))
    object_columns = (
        "object",
        "relpath",
        "label",
        "xmin",
        "ymin",
        "xmax",
        "ymax",
        "difficult",
        "inside",
        "has_area",
        "box_detail",
    )
    return pd.DataFrame(images), pd.DataFrame(objects, columns=list(object_columns))


def _object_row(relpath: str, annotation_name: str, index: int, item, width: int, height: int) -> dict:
    xmin, ymin, xmax, ymax = item.box
    return {
        "object": f"{ANNOTATIONS_DIR}/{annotation_name}#{index}",
        "relpath": relpath,
        "label": item.label,
        "xmin": xmin,
        "ymin": ymin,
        "xmax": xmax,
        "ymax": ymax,
        "difficult": item.difficult,
        "inside": xmin >= 0 and ymin >= 0 and xmax <= width and ymax <= height,
        "has_area": xmax > xmin and ymax > ymin,
        "box_detail": f"box [{xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}] (xmin, ymin, xmax, ymax) in a {width}x{height} image",
    }


def validation_tables(images: pd.DataFrame, objects: pd.DataFrame, labels: list[str]) -> dict[str, pd.DataFrame]:
    counts = objects["label"].value_counts() if len(objects) else pd.Series(dtype=int)
    table = pd.DataFrame({"label": labels, "objects": [int(counts.get(label, 0)) for label in labels]})
    return {"images": images, "objects": objects, "labels": table}


def suite_parameters(settings: PipelineSettings, labels: list[str]) -> dict:
    return {
        "allowed_formats": list(settings.allowed_formats),
        "min_width": settings.min_image_width,
        "min_height": settings.min_image_height,
        "min_images": settings.detection_min_images,
        "known_labels": list(labels),
        "min_objects": settings.detection_min_objects_per_label,
    }


def dataset_fingerprint(images: pd.DataFrame) -> str:
    """Content hash of images and annotations: the same files and bytes give the same fingerprint."""
    digest = hashlib.sha256(b"detection\n")
    for relpath, image_hash, annotation_hash in sorted(zip(images["relpath"], images["sha256"], images["annotation_sha256"])):
        digest.update(f"{relpath}\t{image_hash}\t{annotation_hash}\n".encode())
    return digest.hexdigest()


def split_images(images: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int) -> pd.DataFrame:
    """Deterministic train/val/test split ordered by a seeded hash of each image's content and path."""
    count = len(images)
    n_test, n_val = max(1, round(count * test_fraction)), max(1, round(count * val_fraction))
    if count - n_test - n_val < 1:
        raise DataValidationError(f"{count} images are too few for a train/val/test split")
    keys = [
        hashlib.sha256(f"{seed}:{sha}:{relpath}".encode()).hexdigest()
        for sha, relpath in zip(images["sha256"], images["relpath"])
    ]
    ordered = images.assign(_key=keys).sort_values("_key")
    ordered = ordered.assign(split=["test"] * n_test + ["val"] * n_val + ["train"] * (count - n_test - n_val))
    return ordered[list(SPLIT_COLUMNS)].sort_values(["split", "relpath"]).reset_index(drop=True)


def _exclude_unreadable(images: pd.DataFrame, objects: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[Violation]]:
    unreadable = images["decodes"].ne(True)
    skipped = [Violation("decodes_as_image", row.relpath, row.decode_error) for row in images[unreadable].itertuples()]
    for item in skipped:
        log.warning("skipping unreadable image %s: %s", item.file, item.detail)
    kept = images[~unreadable].reset_index(drop=True)
    return kept, objects[objects["relpath"].isin(kept["relpath"])].reset_index(drop=True), skipped


def intake_detection_dataset(data_dir: Path, settings: PipelineSettings | None = None) -> DetectionIntakeResult:
    """Scan, validate and split a detection dataset; raise DataValidationError naming every broken rule."""
    settings = settings or get_pipeline_settings()
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise NotADirectoryError(f"data folder {data_dir} does not exist or is not a folder")
    labels = read_labels(data_dir)
    images, objects = scan_dataset(data_dir)
    if images.empty:
        raise DataValidationError(f"{data_dir / IMAGES_DIR} holds no images")
    skipped: list[Violation] = []
    if settings.unreadable_policy == "skip":
        images, objects, skipped = _exclude_unreadable(images, objects)
    fingerprint = dataset_fingerprint(images)
    output_dir = settings.home / "datasets" / fingerprint[:16]
    report, violations = run_expectations(
        validation_tables(images, objects, labels),
        RULES,
        suite_parameters(settings, labels),
        KEY_COLUMNS,
        DETAIL_COLUMNS,
        suite_prefix="fpgaflow-detection",
    )
    result = DetectionIntakeResult(
        **write_report(data_dir, fingerprint, report, violations, skipped, output_dir),
        num_images=len(images),
        num_objects=len(objects),
        num_classes=len(labels),
        class_names=labels,
    )
    ensure_valid(result, Path(result.report_path))
    splits = split_images(images, settings.validation_fraction, settings.test_fraction, settings.split_seed)
    return write_splits(result, splits, output_dir)


def load_detection_splits(split_path: str | Path) -> pd.DataFrame:
    return pd.read_csv(split_path, keep_default_na=False)


def split_image_paths(split_path: str | Path, split: str = "test") -> list[Path]:
    """The image files of one split of a detection split manifest."""
    splits = load_detection_splits(split_path)
    chosen = splits.loc[splits["split"] == split, "path"]
    if chosen.empty:
        raise DataValidationError(f"the split manifest {split_path} has no {split!r} images")
    return [Path(path) for path in chosen]
