"""Watching a data folder: its fingerprint now, the one last recorded for it, whether it changed.

The last fingerprint of each folder is a small JSON file under ``<home>/state/datasets/``, named by a
hash of the folder's resolved path (one file per folder, so checks of different folders never
overwrite each other) and replaced atomically.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from fpgaflow.tasks.data.manifest import build_manifest, dataset_fingerprint
from fpgaflow.tasks.detection.intake import IMAGES_DIR, LABELS_FILE, scan_dataset
from fpgaflow.tasks.detection.intake import dataset_fingerprint as detection_fingerprint
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.events import DATASET_UPDATED, dataset_resource, emit, folder_key
from fpgaflow.tasks.files import write_text_atomic
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings


class RecordedFingerprint(BaseModel):
    """What is kept per folder between checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: str
    fingerprint: str
    num_images: int
    checked_at: str


class DatasetCheck(BaseModel):
    """One check of a folder: ``changed`` only when a previous fingerprint exists and differs."""

    model_config = ConfigDict(frozen=True)

    data_dir: str
    fingerprint: str
    num_images: int
    previous_fingerprint: str | None

    @property
    def first_check(self) -> bool:
        return self.previous_fingerprint is None

    @property
    def changed(self) -> bool:
        return self.previous_fingerprint is not None and self.previous_fingerprint != self.fingerprint


def state_path(data_dir: Path, settings: PipelineSettings | None = None) -> Path:
    settings = settings or get_pipeline_settings()
    return settings.home / "state" / "datasets" / f"{folder_key(data_dir)}.json"


def last_fingerprint(data_dir: Path, settings: PipelineSettings | None = None) -> RecordedFingerprint | None:
    """The fingerprint recorded by the last check of ``data_dir``, or None if it was never checked."""
    path = state_path(data_dir, settings)
    if not path.is_file():
        return None
    try:
        return RecordedFingerprint.model_validate_json(path.read_text())
    except ValidationError as error:
        raise PipelineStepError(
            f"{path} (the last fingerprint of {data_dir}) is not a valid record: {error.errors()[0]['msg']}; "
            "delete it to start watching the folder afresh"
        ) from None


def record_fingerprint(data_dir: Path, fingerprint: str, num_images: int, settings: PipelineSettings | None = None) -> Path:
    """Remember ``fingerprint`` as the latest of ``data_dir``."""
    data_dir = Path(data_dir).expanduser().resolve()
    record = RecordedFingerprint(
        data_dir=str(data_dir),
        fingerprint=fingerprint,
        num_images=num_images,
        checked_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return write_text_atomic(state_path(data_dir, settings), record.model_dump_json(indent=1) + "\n")


def check_dataset(data_dir: Path, settings: PipelineSettings | None = None) -> DatasetCheck:
    """Fingerprint ``data_dir`` (the intake manifest's fingerprint) and compare with the last one recorded."""
    data_dir = Path(data_dir).expanduser().resolve()
    fingerprint, num_images = folder_fingerprint(data_dir)
    previous = last_fingerprint(data_dir, settings)
    return DatasetCheck(
        data_dir=str(data_dir),
        fingerprint=fingerprint,
        num_images=num_images,
        previous_fingerprint=previous.fingerprint if previous else None,
    )


def folder_fingerprint(data_dir: Path) -> tuple[str, int]:
    """The intake's fingerprint of a folder and its number of images: of the images and their annotations when
    the folder is laid out as detection data (``labels.txt`` and ``images/``), else of a folder per class."""
    if (data_dir / LABELS_FILE).is_file() and (data_dir / IMAGES_DIR).is_dir():
        images, _ = scan_dataset(data_dir)
        return detection_fingerprint(images), len(images)
    manifest = build_manifest(data_dir)
    return dataset_fingerprint(manifest), len(manifest)


def dataset_updated_payload(check: DatasetCheck, model_name: str = "") -> dict:
    return {
        "data_dir": check.data_dir,
        "fingerprint": check.fingerprint,
        "previous_fingerprint": check.previous_fingerprint or "",
        "num_images": check.num_images,
        "model_name": model_name,
    }


def emit_dataset_updated(check: DatasetCheck, model_name: str = "") -> str | None:
    resource = {**dataset_resource(Path(check.data_dir)), "fpgaflow.fingerprint": check.fingerprint}
    return emit(DATASET_UPDATED, resource, dataset_updated_payload(check, model_name))


def check_markdown(check: DatasetCheck, event_id: str | None) -> str:
    if check.first_check:
        outcome = "first check of this folder: fingerprint recorded, no event (later changes emit one)"
    elif check.changed:
        sent = f"event id `{event_id}`" if event_id else "**the Prefect API did not take the event**"
        outcome = f"**changed** since the last check: `{DATASET_UPDATED}` emitted ({sent})"
    else:
        outcome = "unchanged since the last check: no event"
    return (
        f"# Data folder `{check.data_dir}`\n\n"
        f"- {check.num_images} files, fingerprint `{check.fingerprint}`\n"
        f"- previous fingerprint `{check.previous_fingerprint or 'none'}`\n"
        f"- {outcome}\n"
    )
