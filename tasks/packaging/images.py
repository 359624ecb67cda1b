"""The serving images on the Docker engine: found by the labels the build gives them, and removed.

An image built by :func:`fpgaflow.tasks.packaging.image_build.build_image` carries ``fpgaflow.model.name`` and
``fpgaflow.model.version``; its build directory (context, log, ``image.json``) is ``<home>/images/<name>-<version>``.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from fpgaflow.fpga_runtime.errors import ModelNotFound
from fpgaflow.tasks.packaging.docker_engine import connect
from fpgaflow.tasks.packaging.image_build import INSTALL_STAGE_LABEL, LABEL_PREFIX
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

MODEL_NAME_LABEL = f"{LABEL_PREFIX}model.name"


MODEL_VERSION_LABEL = f"{LABEL_PREFIX}model.version"


class ServingImage(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    tags: tuple[str, ...]
    model: str
    version: str
    numeric_format: str | None
    size_bytes: int
    created: str | None

    @property
    def reference(self) -> str:
        """The name people use for it: its first tag, else its short id."""
        return self.tags[0] if self.tags else self.id.removeprefix("sha256:")[:12]

    def names(self) -> set[str]:
        return {*self.tags, self.id, self.id.removeprefix("sha256:")[:12]}


def _created(value: str | None) -> str | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00").split(".")[0]).isoformat(timespec="seconds")


def list_images(settings: PipelineSettings | None = None) -> list[ServingImage]:
    """Every fpgaflow serving image on the engine (the build's install stages left out); the engine must answer."""
    client = connect(settings)
    try:
        found = client.images.list(filters={"label": MODEL_NAME_LABEL})
    finally:
        client.close()
    install_key, install_value = INSTALL_STAGE_LABEL.split("=", 1)
    images = []
    for image in found:
        labels = image.labels or {}
        if labels.get(install_key) == install_value:
            continue
        images.append(
            ServingImage(
                id=image.id,
                tags=tuple(sorted(image.tags)),
                model=labels[MODEL_NAME_LABEL],
                version=labels.get(MODEL_VERSION_LABEL, ""),
                numeric_format=labels.get(f"{LABEL_PREFIX}numeric-format"),
                size_bytes=int(image.attrs.get("Size") or 0),
                created=_created(image.attrs.get("Created")),
            )
        )
    return sorted(images, key=lambda image: (image.model, image.version, image.reference))


def find_image(images: list[ServingImage], reference: str) -> ServingImage:
    """The image whose tag or id is ``reference``."""
    for image in images:
        if reference in image.names():
            return image
    known = ", ".join(image.reference for image in images) or "none"
    raise ModelNotFound(f"no fpgaflow serving image {reference!r} on the Docker engine (there are: {known})")


def build_dir(image: ServingImage, settings: PipelineSettings) -> Path | None:
    """The build directory of this image, if this machine has it (its ``image.json`` names the image)."""
    directory = settings.home / "images" / f"{image.model}-{image.version}"
    try:
        record = json.loads((directory / "image.json").read_text())
    except (OSError, ValueError):
        return None
    return directory if record.get("image_id") == image.id or record.get("tag") in image.tags else None


def remove_image(image: ServingImage, settings: PipelineSettings | None = None) -> None:
    """Remove every tag of the image (the engine then drops the image), then its build directory."""
    settings = settings or get_pipeline_settings()
    client = connect(settings)
    try:
        for name in image.tags or (image.id,):
            client.images.remove(name)
    finally:
        client.close()
    directory = build_dir(image, settings)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
