"""What the registry holds, as people ask for it: ``NAME[@VERSION|@ALIAS]``, the models, one version, and removing one.

``NAME`` alone means the newest version. A version's user labels (``--tag KEY=VALUE`` and ``--description`` at
registration) are its tags without the ``fpgaflow.`` prefix and the tag :data:`TAG_DESCRIPTION`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict

from fpgaflow.fpga_runtime.errors import InvalidInput, ModelNotFound
from fpgaflow.fpga_runtime.service import check_name
from fpgaflow.tasks.config import RESERVED_TAG_PREFIX
from fpgaflow.tasks.packaging.service_dir import default_service_dir
from fpgaflow.tasks.registry.lookup import MISSING, holds_service, version_by_alias_or_number
from fpgaflow.tasks.registry.version_state import (
    TAG_DESCRIPTION,
    TAG_FEATURIZER,
    TAG_GATES,
    TAG_NUMERIC_FORMAT,
    TAG_SERVICE_DIR,
    TAG_STATUS,
)
from fpgaflow.tasks.settings import PipelineSettings
from mlflow import MlflowClient


class VersionReference(BaseModel):
    """``NAME``, ``NAME@3`` or ``NAME@champion``; ``selector`` None means the newest version."""

    model_config = ConfigDict(frozen=True)

    name: str
    selector: str | None = None

    @classmethod
    def parse(cls, text: str) -> VersionReference:
        name, separator, selector = text.strip().partition("@")
        if separator and not selector:
            raise InvalidInput(f"{text!r}: give a version number or an alias after '@' (NAME@3, NAME@champion), or NAME alone")
        return cls(name=check_name(name, "model name"), selector=selector or None)

    def __str__(self) -> str:
        return f"{self.name}@{self.selector}" if self.selector else self.name


def _pages(search, **options) -> Iterator[Any]:
    token = None
    while True:
        page = search(page_token=token, **options)
        yield from page
        token = page.token
        if not token:
            return


def versions_of(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of ``name``, newest first (a search leaves out aliases: see :func:`aliases_by_version`)."""
    found = list(_pages(client.search_model_versions, filter_string=f"name = '{check_name(name, 'model name')}'"))
    return sorted(found, key=lambda version: int(version.version), reverse=True)


def aliases_by_version(client: MlflowClient, name: str) -> dict[str, list[str]]:
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as error:
        if error.error_code in MISSING:
            return {}
        raise
    by_version: dict[str, list[str]] = {}
    for alias, version in sorted(aliases.items()):
        by_version.setdefault(str(version), []).append(alias)
    return by_version


def version_rows(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    """Every version of ``name`` as ``models list NAME`` shows it, newest first."""
    aliases = aliases_by_version(client, name)
    return [version_row(version, aliases.get(str(version.version), [])) for version in versions_of(client, name)]


def find_version(client: MlflowClient, reference: VersionReference) -> ModelVersion:
    """The version ``reference`` names; its newest version when it names none."""
    if reference.selector is not None:
        return version_by_alias_or_number(client, reference.name, reference.selector)
    versions = versions_of(client, reference.name)
    if not versions:
        raise ModelNotFound(f"no registered model named {reference.name!r} with a version")
    return client.get_model_version(reference.name, versions[0].version)


def user_tags(tags: dict[str, str]) -> dict[str, str]:
    """The labels a user gave (``--tag``), without fpgaflow's own tags."""
    return {key: value for key, value in sorted(tags.items()) if not key.startswith(RESERVED_TAG_PREFIX)}


def _timestamp(milliseconds: int | None) -> str | None:
    return None if milliseconds is None else datetime.fromtimestamp(milliseconds / 1000, UTC).isoformat(timespec="seconds")


def version_row(model_version: ModelVersion, aliases: list[str]) -> dict[str, Any]:
    """One version as ``models list NAME`` shows it."""
    tags = model_version.tags
    return {
        "name": model_version.name,
        "version": str(model_version.version),
        "aliases": sorted(aliases),
        "status": tags.get(TAG_STATUS),
        "numeric_format": tags.get(TAG_NUMERIC_FORMAT),
        "gates": tags.get(TAG_GATES),
        "featurizer": tags.get(TAG_FEATURIZER),
        "created": _timestamp(model_version.creation_timestamp),
        "description": tags.get(TAG_DESCRIPTION, ""),
        "tags": user_tags(tags),
    }


def model_row(client: MlflowClient, model: RegisteredModel) -> dict[str, Any]:
    """One registered model as ``models list`` shows it."""
    versions = versions_of(client, model.name)
    return {
        "name": model.name,
        "versions": len(versions),
        "newest": str(versions[0].version) if versions else None,
        "aliases": {alias: str(version) for alias, version in sorted(model.aliases.items())},
        "updated": _timestamp(model.last_updated_timestamp),
    }


def list_models(client: MlflowClient) -> list[dict[str, Any]]:
    return [model_row(client, model) for model in sorted(_pages(client.search_registered_models), key=lambda m: m.name)]


def describe_version(model_version: ModelVersion) -> dict[str, Any]:
    """Everything ``models show`` tells about a version: its row, lineage, fpgaflow's tags and the model card."""
    tags = model_version.tags
    return {
        **version_row(model_version, list(model_version.aliases)),
        "run_id": model_version.run_id,
        "source": model_version.source,
        "fpgaflow_tags": {key: value for key, value in sorted(tags.items()) if key.startswith(RESERVED_TAG_PREFIX)},
        "model_card": model_version.description or "",
    }


def local_service_dirs(model_version: ModelVersion, settings: PipelineSettings) -> list[Path]:
    """The service directories fpgaflow wrote for this version under its home (the package step's, a downloaded one)."""
    name, version = model_version.name, str(model_version.version)
    candidates = [Path(path) for path in (model_version.tags.get(TAG_SERVICE_DIR),) if path]
    candidates.append(default_service_dir(name, version, settings))
    home = settings.home.resolve()
    unique = dict.fromkeys(path.resolve() for path in candidates)
    return [path for path in unique if path.is_relative_to(home) and holds_service(path, name, version)]


def delete_version(client: MlflowClient, name: str, version: str) -> bool:
    """Remove the version from the registry, and the model too once it has no version left; True if the model went."""
    try:
        client.delete_model_version(name, version)
    except MlflowException as error:
        if error.error_code not in MISSING:
            raise
    if versions_of(client, name):
        return False
    client.delete_registered_model(name)
    return True
