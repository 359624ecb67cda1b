"""What a model version carries: its tags, the ``candidate``/``champion`` aliases, and how far it got.

A step can stop part-way (MLflow down, a full disk). The version tag ``fpgaflow.status`` says how
far a version got (:class:`VersionStatus`), so a reviewer sees an incomplete one and nothing
trusts it: only a ``published`` version receives ``candidate`` or ``champion``, and publication
takes ``candidate`` away before it changes anything. A re-run finds the run's version again (by
its run id, never creating a second one) and completes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from fpgaflow.fpga_runtime.errors import FpgaflowError, ModelNotFound
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.registry.client import describe_failure
from mlflow import MlflowClient

CANDIDATE_ALIAS = "candidate"


CHAMPION_ALIAS = "champion"


PARITY_GATE = "parity"


TAG_RUN_ID = "fpgaflow.run_id"


TAG_FEATURIZER = "fpgaflow.featurizer"


TAG_INPUT_TENSORS = "fpgaflow.input_tensors"  # the name clients send encoded images under


TAG_OUTPUT_TENSORS = "fpgaflow.output_tensors"  # the name (or JSON list of names) of the default answer's outputs


TAG_SERVICE_URI = "fpgaflow.service_uri"


TAG_SERVICE_ARTIFACTS = "fpgaflow.service_artifacts"


TAG_SERVICE_DIR = "fpgaflow.service_dir"


TAG_NUMERIC_FORMAT = "fpgaflow.numeric_format"


TAG_GATES = "fpgaflow.gates"


TAG_STATUS = "fpgaflow.status"


TAG_DESCRIPTION = "fpgaflow.description"  # what `--description` said at registration


GATES_PASSED = "passed"


class VersionStatus(StrEnum):
    """How far a version got (tag ``fpgaflow.status``); only a ``published`` one may hold an alias."""

    REGISTERING = "registering"  # created; its model card is not written yet
    REGISTERED = "registered"  # complete as trained; conversion, numerics and packaging are still to come
    PUBLISHING = "publishing"  # its service, gates and card are being attached, or that stopped part-way
    PUBLISHED = "published"  # everything attached; ``candidate`` if its gates passed


class VersionIncomplete(PipelineStepError):
    """Registering or publishing a version stopped part-way; a re-run of the pipeline completes it."""


@contextmanager
def resumable_step(step: str, what: str) -> Iterator[None]:
    """A failure inside becomes :class:`VersionIncomplete` naming the step, the version and the cause.

    Errors that already explain themselves (bad input, an unknown version) pass unchanged.
    """
    try:
        yield
    except (PipelineStepError, FpgaflowError):
        raise
    except Exception as error:
        raise VersionIncomplete(
            f"{step} {what} failed ({describe_failure(error)}); a re-run of the pipeline completes it"
        ) from error


def gates_passed(model_version: ModelVersion) -> bool:
    """True for a completely published version whose blocking gates passed."""
    tags = model_version.tags
    return tags.get(TAG_STATUS) == VersionStatus.PUBLISHED and tags.get(TAG_GATES) == GATES_PASSED


def run_id_of(model_version: ModelVersion) -> str:
    """The MLflow run a version was registered from (the pipeline registers every version from its run)."""
    if model_version.run_id is None:
        raise ModelNotFound(
            f"{model_version.name} version {model_version.version} has no MLflow run: it was not registered by the pipeline"
        )
    return model_version.run_id


def get_version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ModelNotFound(f"model {name!r} has no version {version} in the registry") from None
        raise
