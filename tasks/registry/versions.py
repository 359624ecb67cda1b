"""The model registry: versions people review, their gates, and the ``candidate``/``champion`` aliases.

Order of a pipeline run (the original service did the same: register, then convert):

1. :func:`register_trained_model` right after training: logs the trained classifier to the
   run and creates the model version (idempotent per run).
2. :func:`publish_version` after conversion, numerics and packaging: attaches the service
   definition, records the gates as version tags, writes the model card as the version's
   description, and gives ``candidate`` to the version only if its gates passed.
3. :func:`promote` (a separate, explicit step): ``champion`` for a version whose gates passed.

A step can stop part-way (MLflow down, a full disk). The version tag ``fpgaflow.status`` says how
far a version got (:class:`VersionStatus`), so a reviewer sees an incomplete one and nothing
trusts it: only a ``published`` version receives ``candidate`` or ``champion``, and publication
takes ``candidate`` away before it changes anything. A re-run finds the run's version again (by
its run id, never creating a second one) and completes it.

The logged model is the trained classifier as one MLflow Keras model (FPGA stage followed by
CPU stage, preprocessed image in → class probabilities out, with a tensor signature and the
class names as metadata). It is what training produced, loadable with ``mlflow.keras`` or
``mlflow.pyfunc`` for review and re-evaluation; the deployable unit is the service definition
logged beside it under the run's ``service/`` artifacts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from fpgaflow.fpga_runtime.errors import FpgaflowError, ModelNotFound
from fpgaflow.fpga_runtime.service import ServiceDefinition, check_name, load_service
from fpgaflow.fpga_runtime.settings import Settings, get_settings
from fpgaflow.tasks.artifacts import publish_link, publish_markdown
from fpgaflow.tasks.conversion.onnx_stages import FPGA_INPUT, PROBABILITIES, ConversionReport, load_keras_model
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.registry.model_card import Gate, ModelCard
from fpgaflow.tasks.registry.tracking import (
    ARTIFACT_MODEL_CARD,
    ARTIFACT_SERVICE_DIR,
    FEATURIZER_PARAM_PREFIX,
    GATE_TAG_PREFIX,
    TAG_DATASET_FINGERPRINT,
    FormatOutcome,
    coerce_outcomes,
    describe_failure,
    evaluation_metrics,
    mlflow_client,
    mlflow_ui_url,
    numerics_gate,
    redacted_uri,
    split_sizes,
    talks_to_mlflow,
)

CANDIDATE_ALIAS = "candidate"
CHAMPION_ALIAS = "champion"
LOGGED_MODEL_NAME = "classifier"
PARITY_GATE = "parity"

TAG_RUN_ID = "fpgaflow.run_id"
TAG_FEATURIZER = "fpgaflow.featurizer"
TAG_SERVICE_URI = "fpgaflow.service_uri"
TAG_SERVICE_ARTIFACTS = "fpgaflow.service_artifacts"
TAG_SERVICE_DIR = "fpgaflow.service_dir"
TAG_NUMERIC_FORMAT = "fpgaflow.numeric_format"
TAG_GATES = "fpgaflow.gates"
TAG_STATUS = "fpgaflow.status"
GATES_PASSED = "passed"


class VersionStatus(StrEnum):
    """How far a version got (tag ``fpgaflow.status``); only a ``published`` one may hold an alias."""

    REGISTERING = "registering"  # created; its model card is not written yet
    REGISTERED = "registered"  # complete as trained; conversion, numerics and packaging are still to come
    PUBLISHING = "publishing"  # its service, gates and card are being attached, or that stopped part-way
    PUBLISHED = "published"  # everything attached; ``candidate`` if its gates passed


class PromotionRefused(PipelineStepError):
    """A version that may not become ``champion`` (gates failed or never recorded, publication incomplete)."""


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
        raise VersionIncomplete(f"{step} {what} failed ({describe_failure(error)}); a re-run of the pipeline completes it") from error


def gates_passed(model_version: ModelVersion) -> bool:
    """True for a completely published version whose blocking gates passed."""
    tags = model_version.tags
    return tags.get(TAG_STATUS) == VersionStatus.PUBLISHED and tags.get(TAG_GATES) == GATES_PASSED


class RegisteredVersion(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    run_id: str
    source: str

    def service_source(self, dataset_fingerprint: str) -> dict[str, str]:
        """The lineage a service definition carries (``service.json`` ``source``)."""
        return {
            "model_uri": f"models:/{self.name}/{self.version}",
            "logged_model": self.source,
            "mlflow_run_id": self.run_id,
            "dataset_fingerprint": dataset_fingerprint,
        }


class PublishedVersion(BaseModel):
    """A version with its service definition and gate results attached."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    run_id: str
    numeric_format: str
    service_dir: Path
    service_uri: str
    gates: tuple[Gate, ...]
    gates_passed: bool
    numerics: dict[str, FormatOutcome]
    aliases: tuple[str, ...]
    model_card: str


class Promotion(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    previous_champion: str | None


def get_version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ModelNotFound(f"model {name!r} has no version {version} in the registry") from None
        raise


def find_version_for_run(client: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    """The version of ``name`` created from ``run_id``, if any (the lowest, should there be several)."""
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return min(versions, key=lambda version: int(version.version)) if versions else None


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name, description="Image model built by the fpgaflow pipeline; each version describes itself in its model card.")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def compose_classifier(fpga_model, cpu_model):
    """FPGA stage then CPU stage as one functional Keras model: preprocessed image → probabilities."""
    import keras

    return keras.Model(fpga_model.inputs, cpu_model(fpga_model.outputs[0]), name=LOGGED_MODEL_NAME)


def classifier_signature(classifier):
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    input_shape = (-1, *tuple(classifier.inputs[0].shape)[1:])
    output_shape = (-1, *tuple(classifier.outputs[0].shape)[1:])
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), input_shape, FPGA_INPUT)]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), output_shape, PROBABILITIES)]),
    )


def logged_classifier_id(client: MlflowClient, experiment_id: str, run_id: str) -> str | None:
    """Model id of the classifier this run already logged (a retried step), if any."""
    models = client.search_logged_models(
        [experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{LOGGED_MODEL_NAME}'"
    )
    ready = [model for model in models if model.status == LoggedModelStatus.READY]
    return ready[0].model_id if ready else None


def log_classifier(
    client: MlflowClient,
    experiment_id: str,
    run_id: str,
    fpga_model_path: Path,
    cpu_model_path: Path,
    class_names: Sequence[str],
) -> str:
    """Log the trained classifier as an MLflow Keras model of the run; returns its model id.

    The logged model is created in the run's experiment explicitly: left to itself, MLflow would
    file a model logged outside an active run under the default experiment (``./mlruns``).
    """
    import keras
    import mlflow.keras
    import tensorflow as tf
    from mlflow.models import Model

    classifier = compose_classifier(load_keras_model(fpga_model_path), load_keras_model(cpu_model_path))
    classes = int(classifier.outputs[0].shape[-1])
    if classes != len(class_names):
        raise PipelineStepError(f"the CPU stage scores {classes} classes but {len(class_names)} class names were given")
    logged = client.create_logged_model(
        experiment_id, name=LOGGED_MODEL_NAME, source_run_id=run_id, params=client.get_run(run_id).data.params
    )
    info = Model.log(
        artifact_path=None,
        name=LOGGED_MODEL_NAME,
        flavor=mlflow.keras,
        run_id=run_id,
        model_id=logged.model_id,
        model=classifier,
        signature=classifier_signature(classifier),
        pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
        metadata={"class_names": list(class_names)},
    )
    return info.model_id


def create_version(client: MlflowClient, model_name: str, run_id: str, log_model: Callable[[str], str]) -> ModelVersion:
    """A new version of the model ``log_model(experiment_id)`` logs to the run, tagged ``registering``."""
    run = client.get_run(run_id)
    model_id = log_model(run.info.experiment_id)
    ensure_registered_model(client, model_name)
    return client.create_model_version(
        model_name,
        f"models:/{model_id}",
        run_id=run_id,
        model_id=model_id,
        tags={
            TAG_RUN_ID: run_id,
            TAG_DATASET_FINGERPRINT: run.data.tags.get(TAG_DATASET_FINGERPRINT, ""),
            TAG_FEATURIZER: run.data.params.get("featurizer", ""),
            TAG_STATUS: VersionStatus.REGISTERING,
        },
    )


def register_run_model(
    client: MlflowClient, model_name: str, run_id: str, class_names: Sequence[str], log_model: Callable[[str], str]
) -> RegisteredVersion:
    """The version of the model ``run_id`` trained: created once, completed by a retry, never made twice.

    ``log_model(experiment_id)`` logs the trained model to the run and returns its model id; it is
    called only while the run has no version. A retry finds the version by its run, also when the
    creating call failed after the registry had made it, and writes its model card if that is missing.
    """
    with resumable_step("registering", f"{model_name} from MLflow run {run_id}"):
        version = find_version_for_run(client, model_name, run_id)
        if version is None:
            version = create_version(client, model_name, run_id, log_model)
    number = str(version.version)
    if version.tags.get(TAG_STATUS) == VersionStatus.REGISTERING:
        with resumable_step("registering", f"{model_name} version {number}"):
            card = model_card_from_run(client, model_name, number, run_id, class_names=tuple(class_names))
            client.update_model_version(model_name, number, description=card.markdown())
            client.set_model_version_tag(model_name, number, TAG_STATUS, VersionStatus.REGISTERED)
    return RegisteredVersion(name=model_name, version=number, run_id=run_id, source=version.source)


def register_trained_model(
    run_id: str,
    model_name: str,
    fpga_model_path: Path,
    cpu_model_path: Path,
    class_names: Sequence[str],
    settings: Settings | None = None,
) -> RegisteredVersion:
    """Create the model version of this run's trained model; a retried step returns the same version."""
    settings = settings or get_settings()
    check_name(model_name, "model name")
    client = mlflow_client(settings)

    def log_model(experiment_id: str) -> str:
        return logged_classifier_id(client, experiment_id, run_id) or log_classifier(
            client, experiment_id, run_id, fpga_model_path, cpu_model_path, class_names
        )

    return register_run_model(client, model_name, run_id, class_names, log_model)


def evaluate_gates(
    report: ConversionReport, outcomes: Mapping[str, FormatOutcome], served_format: str
) -> tuple[tuple[Gate, ...], bool]:
    """Every gate of the version, and whether the ones that block it (parity, the served format) passed."""
    parity_detail = (
        "; ".join(report.problems)
        if report.problems
        else f"onnxruntime matches Keras on {report.images} held-out images ("
        + ", ".join(f"{stage} scaled diff {parity.scaled_diff:.2g}" for stage, parity in report.stages.items())
        + ")"
    )
    gates = [Gate(name=PARITY_GATE, passed=report.passed, detail=parity_detail)]
    gates += [numerics_gate(name, outcome) for name, outcome in outcomes.items()]
    if served_format not in outcomes:
        gates.append(Gate(name=served_format, passed=False, detail="no numerics result for the served format"))
    blocking = [gate for gate in gates if gate.name in (PARITY_GATE, served_format)]
    return tuple(gates), all(gate.passed for gate in blocking)


def model_card_from_run(
    client: MlflowClient,
    name: str,
    version: str,
    run_id: str,
    *,
    class_names: tuple[str, ...],
    service: ServiceDefinition | None = None,
    numerics: Mapping[str, FormatOutcome] | None = None,
    gates: tuple[Gate, ...] = (),
) -> ModelCard:
    run = client.get_run(run_id)
    params = run.data.params
    return ModelCard(
        name=name,
        version=version,
        dataset_fingerprint=run.data.tags.get(TAG_DATASET_FINGERPRINT, ""),
        split_sizes=split_sizes(params),
        class_names=class_names,
        featurizer=params.get("featurizer", "unknown"),
        weights=params.get("weights", "unknown"),
        input_size=params.get("input_size", "?"),
        parameter_count=params.get(f"{FEATURIZER_PARAM_PREFIX}parameter_count"),
        mac_count=params.get(f"{FEATURIZER_PARAM_PREFIX}mac_count"),
        test_metrics=evaluation_metrics(run.data.metrics),
        numeric_format=service.numeric_format if service else "",
        numerics={fmt: (outcome.accuracy, outcome.delta) for fmt, outcome in (numerics or {}).items()},
        gates=gates,
    )


def publish_version(
    model_name: str,
    version: str | int,
    service_dir: Path,
    conversion_report: ConversionReport,
    outcomes: Mapping[str, Any],
    settings: Settings | None = None,
) -> PublishedVersion:
    """Attach the service definition and gate results to a version; ``candidate`` only if its gates passed.

    From its first change to its last the version is ``publishing`` and no ``candidate``; a retry
    overwrites the artifacts, sets tags and description again and completes it.
    """
    client = mlflow_client(settings)
    with resumable_step("publishing", f"{model_name} version {version}"):
        model_version = get_version(client, model_name, version)
        version = str(model_version.version)
        service_dir = Path(service_dir)
        service = load_service(service_dir)
        if (service.name, service.version) != (model_name, version):
            raise PipelineStepError(
                f"{service_dir} holds service {service.name!r} version {service.version}, not {model_name!r} version {version}"
            )
        numerics = coerce_outcomes(outcomes)
        gates, passed = evaluate_gates(conversion_report, numerics, service.numeric_format)
        begin_publication(client, model_version)
        run_id = model_version.run_id
        client.log_artifacts(run_id, str(service_dir), ARTIFACT_SERVICE_DIR)
        card = model_card_from_run(
            client, model_name, version, run_id, class_names=service.class_names, service=service, numerics=numerics, gates=gates
        )
        description = card.markdown()
        client.log_text(run_id, description, ARTIFACT_MODEL_CARD)
        client.update_model_version(model_name, version, description=description)
        service_uri = f"runs:/{run_id}/{ARTIFACT_SERVICE_DIR}"
        blocking_failures = [gate.name for gate in gates if not gate.passed and gate.name in (PARITY_GATE, service.numeric_format)]
        tags = {
            TAG_SERVICE_URI: service_uri,
            TAG_SERVICE_ARTIFACTS: f"{client.get_run(run_id).info.artifact_uri}/{ARTIFACT_SERVICE_DIR}",
            TAG_SERVICE_DIR: str(service_dir.resolve()),
            TAG_NUMERIC_FORMAT: service.numeric_format,
            TAG_GATES: GATES_PASSED if passed else "failed: " + ", ".join(blocking_failures),
            **{f"{GATE_TAG_PREFIX}{gate.name}": gate.tag_value() for gate in gates},
            TAG_STATUS: VersionStatus.PUBLISHED,
        }
        for key, value in tags.items():  # the status last: it tells that everything before it is there
            client.set_model_version_tag(model_name, version, key, value)
        if passed:
            client.set_registered_model_alias(model_name, CANDIDATE_ALIAS, version)
        aliases = tuple(get_version(client, model_name, version).aliases)
    return PublishedVersion(
        name=model_name,
        version=version,
        run_id=run_id,
        numeric_format=service.numeric_format,
        service_dir=service_dir,
        service_uri=service_uri,
        gates=gates,
        gates_passed=passed,
        numerics=numerics,
        aliases=aliases,
        model_card=description,
    )


def begin_publication(client: MlflowClient, model_version: ModelVersion) -> None:
    """Take ``candidate`` from the version, then mark it ``publishing``: it is no candidate while it changes."""
    if CANDIDATE_ALIAS in model_version.aliases:
        client.delete_registered_model_alias(model_version.name, CANDIDATE_ALIAS)
    client.set_model_version_tag(model_version.name, str(model_version.version), TAG_STATUS, VersionStatus.PUBLISHING)


@talks_to_mlflow
def promote(model_name: str, version: str | int, settings: Settings | None = None) -> Promotion:
    """Give ``champion`` to a completely published version whose gates passed; refuse any other with the reason."""
    client = mlflow_client(settings)
    model_version = get_version(client, model_name, version)
    version = str(model_version.version)
    refused = f"{model_name} version {version} cannot become {CHAMPION_ALIAS}"
    gates = model_version.tags.get(TAG_GATES)
    status = model_version.tags.get(TAG_STATUS)
    if gates is None:
        raise PromotionRefused(f"{refused}: it has no gate results (conversion, numerics and packaging never completed for it)")
    if status != VersionStatus.PUBLISHED:
        raise PromotionRefused(
            f"{refused}: its publication did not complete ({TAG_STATUS} is {status or 'missing'}); "
            "a re-run of the pipeline completes it"
        )
    if gates != GATES_PASSED:
        details = "; ".join(
            f"{key.removeprefix(GATE_TAG_PREFIX)} {value}"
            for key, value in sorted(model_version.tags.items())
            if key.startswith(GATE_TAG_PREFIX) and value.startswith("failed")
        )
        raise PromotionRefused(f"{refused}: gates {gates} ({details})")
    try:
        previous = client.get_model_version_by_alias(model_name, CHAMPION_ALIAS).version
    except MlflowException:
        previous = None
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)
    return Promotion(name=model_name, version=version, previous_champion=str(previous) if previous is not None else None)


def pipeline_summary(published: PublishedVersion, settings: Settings | None = None) -> dict[str, Any]:
    """The keys this step adds to ``fpgaflow run --json``."""
    settings = settings or get_settings()
    return {
        "model_name": published.name,
        "model_version": published.version,
        "mlflow_run_id": published.run_id,
        "mlflow_tracking_uri": redacted_uri(settings.mlflow_tracking_uri),
        "service_dir": str(published.service_dir),
        "numerics": {
            fmt: {"accuracy": outcome.accuracy, "delta": outcome.delta} for fmt, outcome in published.numerics.items()
        },
    }


@task(name="register-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def register_trained_model_task(
    run_id: str, model_name: str, fpga_model_path: Path, cpu_model_path: Path, class_names: Sequence[str]
) -> RegisteredVersion:
    return publish_registration(register_trained_model(run_id, model_name, fpga_model_path, cpu_model_path, class_names))


def publish_registration(registered: RegisteredVersion) -> RegisteredVersion:
    """The registration step's artifact: a link to the new model version in the MLflow UI."""
    name, version = registered.name, registered.version
    publish_link("model-registration", f"{mlflow_ui_url()}/#/models/{name}/versions/{version}",
                 f"{name} version {version}", "the registered model version in the MLflow UI")
    return registered


@task(name="publish-model-version", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def publish_version_task(
    model_name: str,
    version: str,
    service_dir: Path,
    conversion_report: ConversionReport,
    outcomes: Mapping[str, Any],
) -> PublishedVersion:
    published = publish_version(model_name, version, service_dir, conversion_report, outcomes)
    publish_markdown(
        "model-card",
        published.model_card,
        f"{model_name} version {published.version}, aliases: {', '.join(published.aliases) or 'none'}",
    )
    return published


@task(name="promote-model-version", cache_policy=NO_CACHE)
def promote_task(model_name: str, version: str) -> Promotion:
    return promote(model_name, version)
