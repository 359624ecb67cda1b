"""Publishing a registered version: its service definition attached, its gates recorded as version tags,
its model card as the version's description, and ``candidate`` given to it only if its gates passed."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from pydantic import BaseModel, ConfigDict

from fpgaflow.fpga_runtime.service import load_service
from fpgaflow.tasks.conversion.onnx_stages import ConversionReport
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.registry.client import mlflow_client, redacted_uri
from fpgaflow.tasks.registry.model_card import Gate
from fpgaflow.tasks.registry.registration import model_card_from_run
from fpgaflow.tasks.registry.run_metrics import GATE_TAG_PREFIX, FormatOutcome, coerce_outcomes, numerics_gate
from fpgaflow.tasks.registry.runs import ARTIFACT_MODEL_CARD, ARTIFACT_SERVICE_DIR
from fpgaflow.tasks.registry.version_state import (
    CANDIDATE_ALIAS,
    GATES_PASSED,
    PARITY_GATE,
    TAG_GATES,
    TAG_NUMERIC_FORMAT,
    TAG_SERVICE_ARTIFACTS,
    TAG_SERVICE_DIR,
    TAG_SERVICE_URI,
    TAG_STATUS,
    VersionStatus,
    get_version,
    resumable_step,
    run_id_of,
)
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings
from mlflow import MlflowClient


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


def publish_version(
    model_name: str,
    version: str | int,
    service_dir: Path,
    conversion_report: ConversionReport,
    outcomes: Mapping[str, Any],
    settings: PipelineSettings | None = None,
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
        run_id = run_id_of(model_version)
        client.log_artifacts(run_id, str(service_dir), ARTIFACT_SERVICE_DIR)
        card = model_card_from_run(
            client, model_name, version, run_id, class_names=service.class_names, service=service, numerics=numerics, gates=gates
        )
        description = card.markdown()
        client.log_text(run_id, description, ARTIFACT_MODEL_CARD)
        client.update_model_version(model_name, version, description=description)
        service_uri = f"runs:/{run_id}/{ARTIFACT_SERVICE_DIR}"
        blocking_failures = [
            gate.name for gate in gates if not gate.passed and gate.name in (PARITY_GATE, service.numeric_format)
        ]
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


def pipeline_summary(published: PublishedVersion, settings: PipelineSettings | None = None) -> dict[str, Any]:
    """The keys this step adds to ``fpgaflow run --json``."""
    settings = settings or get_pipeline_settings()
    return {
        "model_name": published.name,
        "model_version": published.version,
        "mlflow_run_id": published.run_id,
        "mlflow_tracking_uri": redacted_uri(settings.mlflow_tracking_uri),
        "service_dir": str(published.service_dir),
        "numerics": {fmt: {"accuracy": outcome.accuracy, "delta": outcome.delta} for fmt, outcome in published.numerics.items()},
    }
