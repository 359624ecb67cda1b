"""Finding a registered model version by alias or number, and its service directory on this machine.

A version's service definition is attached to its MLflow run (``service/`` artifacts) by the
registry step, which also records where the package step wrote it (tag ``fpgaflow.service_dir``).
That directory is used when it still holds the same service; otherwise the artifacts are
downloaded into ``<home>/services/<name>/<version>``.
"""

from __future__ import annotations

from pathlib import Path

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict

from fpgaflow.fpga_runtime.errors import FpgaflowError, InvalidInput, ModelNotFound
from fpgaflow.fpga_runtime.service import check_name, load_service
from fpgaflow.tasks.files import replace_directory_atomic
from fpgaflow.tasks.packaging.service_dir import default_service_dir
from fpgaflow.tasks.registry.client import mlflow_client, talks_to_mlflow
from fpgaflow.tasks.registry.runs import ARTIFACT_SERVICE_DIR
from fpgaflow.tasks.registry.version_state import CHAMPION_ALIAS, TAG_SERVICE_DIR, gates_passed, get_version, run_id_of
from fpgaflow.tasks.settings import PipelineSettings
from mlflow import MlflowClient


class ResolvedVersion(BaseModel):
    """A registered version, ready to score or deploy."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    run_id: str
    aliases: tuple[str, ...]
    gates_passed: bool
    service_dir: Path

    @property
    def label(self) -> str:
        aliases = f" ({', '.join(self.aliases)})" if self.aliases else ""
        return f"{self.name} version {self.version}{aliases}"


MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # MLflow's codes for an unknown model or alias


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding ``alias``, or None when the model or the alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in MISSING:
            return None
        raise


def version_by_alias_or_number(client: MlflowClient, name: str, alias_or_version: str | int) -> ModelVersion:
    """``"3"`` or ``3`` is a version number; anything else is an alias (``champion``, ``candidate`` ...)."""
    check_name(name, "model name")
    reference = str(alias_or_version).strip()
    if not reference:
        raise InvalidInput("give a model version number or an alias, got an empty string")
    if reference.isdigit():
        return get_version(client, name, reference)
    model_version = version_by_alias(client, name, reference)
    if model_version is not None:
        return model_version
    try:
        aliases = sorted(client.get_registered_model(name).aliases)
    except MlflowException as error:
        if error.error_code in MISSING:
            raise ModelNotFound(f"no registered model named {name!r}") from None
        raise
    raise ModelNotFound(f"model {name!r} has no alias {reference!r} (its aliases: {', '.join(aliases) or 'none'})")


def holds_service(directory: Path, name: str, version: str) -> bool:
    """True when ``directory`` is a valid service directory of exactly this name and version."""
    try:
        service = load_service(directory)
    except FpgaflowError:
        return False
    return (service.name, service.version) == (name, version)


def fetch_service_dir(client: MlflowClient, model_version: ModelVersion, destination: Path) -> Path:
    """Download the version's ``service/`` artifacts into ``destination`` (replaced atomically)."""
    name, version = model_version.name, str(model_version.version)

    def build(staging: Path) -> None:
        try:
            downloaded = Path(client.download_artifacts(run_id_of(model_version), ARTIFACT_SERVICE_DIR, str(staging)))
        except MlflowException as error:
            raise ModelNotFound(
                f"{name} version {version} has no service definition in its MLflow run {model_version.run_id} "
                f"(was the pipeline run past the package step?): {error.message}"
            ) from None
        for item in downloaded.iterdir():
            item.rename(staging / item.name)
        downloaded.rmdir()
        if not holds_service(staging, name, version):
            raise ModelNotFound(f"the service artifacts of {name} version {version} are not a service of that version")

    return replace_directory_atomic(build, destination)


def service_dir_of(client: MlflowClient, model_version: ModelVersion, settings: PipelineSettings | None = None) -> Path:
    name, version = model_version.name, str(model_version.version)
    recorded = model_version.tags.get(TAG_SERVICE_DIR)
    if recorded and holds_service(Path(recorded), name, version):
        return Path(recorded)
    local = default_service_dir(name, version, settings)
    if holds_service(local, name, version):
        return local
    return fetch_service_dir(client, model_version, local)


def resolved(client: MlflowClient, model_version: ModelVersion, settings: PipelineSettings | None = None) -> ResolvedVersion:
    return ResolvedVersion(
        name=model_version.name,
        version=str(model_version.version),
        run_id=run_id_of(model_version),
        aliases=tuple(model_version.aliases),
        gates_passed=gates_passed(model_version),
        service_dir=service_dir_of(client, model_version, settings),
    )


@talks_to_mlflow
def resolve_version(model_name: str, alias_or_version: str | int, settings: PipelineSettings | None = None) -> ResolvedVersion:
    """The version ``alias_or_version`` of ``model_name`` with a service directory on this machine."""
    client = mlflow_client(settings)
    return resolved(client, version_by_alias_or_number(client, model_name, alias_or_version), settings)


@talks_to_mlflow
def find_champion(model_name: str, settings: PipelineSettings | None = None) -> ResolvedVersion | None:
    """The ``champion`` of ``model_name``, or None when the model has none yet."""
    client = mlflow_client(settings)
    model_version = version_by_alias(client, check_name(model_name, "model name"), CHAMPION_ALIAS)
    return resolved(client, model_version, settings) if model_version is not None else None
