"""MLflow tracking: one MLflow run per pipeline run, holding everything a reviewer needs.

Every function takes the run id explicitly (steps may run in different processes or task
runs) and talks to MLflow through an explicit :class:`~mlflow.MlflowClient`, never through a
process-wide "active run".

What lands where in a run:

- params: the pipeline config (``featurizer``, ``weights``, ``training.epochs`` ...) and the
  featurizer's facts (``featurizer.feature_dim`` ...);
- tags: ``fpgaflow.dataset_fingerprint``, ``mlflow.source.git.commit``,
  ``fpgaflow.prefect.flow_run_id`` / ``fpgaflow.prefect.flow_run_url`` (inside a flow run),
  ``fpgaflow.gate.<format>`` (numerics gate outcome);
- metrics: training curves (``loss``, ``val_accuracy`` ..., step = epoch), evaluation
  (``test_accuracy`` ...), parity (``parity.<stage>.<measure>``) and numerics
  (``numerics.<format>.accuracy`` / ``.delta``);
- artifacts: ``data/`` (validation report, split manifest), ``evaluation/`` (confusion
  matrix, per-class table, featurizer facts), ``conversion/conversion_report.json``,
  ``model_card.md`` and ``service/`` (the service definition package).
"""

from __future__ import annotations

import csv
import functools
import math
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import mlflow
import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import to_jsonable_python

from fpgaflow.fpga_runtime.settings import Settings, get_settings
from fpgaflow.tasks.artifacts import publish_link
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.conversion.onnx_stages import ConversionReport
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.registry.model_card import Gate

TAG_MODEL_NAME = "fpgaflow.model_name"
TAG_DATASET_FINGERPRINT = "fpgaflow.dataset_fingerprint"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_FLOW_RUN_ID = "fpgaflow.prefect.flow_run_id"
TAG_FLOW_RUN_URL = "fpgaflow.prefect.flow_run_url"
GATE_TAG_PREFIX = "fpgaflow.gate."
TEST_METRIC_PREFIX = "test_"
SPLIT_PARAM = "data.{split}_images"
FEATURIZER_PARAM_PREFIX = "featurizer."

ARTIFACT_DATA_DIR = "data"
ARTIFACT_EVALUATION_DIR = "evaluation"
ARTIFACT_CONVERSION_REPORT = "conversion/conversion_report.json"
ARTIFACT_MODEL_CARD = "model_card.md"
ARTIFACT_SERVICE_DIR = "service"

REMOTE_TRACKING_SCHEMES = ("http", "https", "databricks")
MAX_METRICS_PER_BATCH = 1000


class FormatOutcome(BaseModel):
    """The numerics step's result for one numeric format, as tracking and the registry record it.

    Built from a mapping or from any object with these attributes (``from_attributes``).
    ``delta`` is the accuracy minus the fp32 accuracy (a fraction; negative = a drop).
    """

    model_config = ConfigDict(from_attributes=True, frozen=True)

    accuracy: float
    delta: float
    passed: bool
    message: str = ""


def coerce_outcomes(outcomes: Mapping[str, Any]) -> dict[str, FormatOutcome]:
    """Per-format results of the numerics step (models, mappings or attribute objects) → FormatOutcome."""
    coerced = {}
    for numeric_format, outcome in outcomes.items():
        try:
            if isinstance(outcome, FormatOutcome):
                coerced[numeric_format] = outcome
            elif isinstance(outcome, Mapping):
                coerced[numeric_format] = FormatOutcome.model_validate(dict(outcome))
            else:
                coerced[numeric_format] = FormatOutcome.model_validate(outcome, from_attributes=True)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors())
            raise PipelineStepError(f"numerics result for {numeric_format!r} is not usable: {problems}") from None
    return coerced


def numerics_metric(numeric_format: str, measure: str) -> str:
    return f"numerics.{numeric_format}.{measure}"


def parity_metric(stage: str, measure: str) -> str:
    return f"parity.{stage}.{measure}"


class TrackingUnavailable(PipelineStepError):
    """The MLflow tracking server did not answer (down, unreachable, or failing every request)."""


def mlflow_client(settings: Settings | None = None) -> MlflowClient:
    """Point MLflow at the configured tracking/registry URI and return a client for it.

    The process-wide URI is set too, because MLflow's model logging resolves it globally; so are the
    retries and timeout of requests to a tracking server, which MLflow reads from its environment.
    """
    settings = settings or get_settings()
    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    MLFLOW_HTTP_REQUEST_MAX_RETRIES.set(str(settings.mlflow_http_retries))
    MLFLOW_HTTP_REQUEST_TIMEOUT.set(str(settings.mlflow_http_timeout_seconds))
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def redacted_uri(uri: str) -> str:
    """The tracking URI without a password, fit for logs, summaries and tags."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def unanswered_request(error: BaseException) -> requests.RequestException | None:
    """The request to a tracking server that got no usable answer behind an MLflow error, if that is what it is."""
    cause = error.__cause__ or error.__context__
    return cause if isinstance(error, MlflowException) and isinstance(cause, requests.RequestException) else None


def root_cause(error: BaseException) -> BaseException:
    while (cause := error.__cause__ or error.__context__) is not None:
        error = cause
    return error


def describe_failure(error: BaseException) -> str:
    """One line for a failed MLflow call: the server and why it did not answer, or MLflow's own message."""
    request = unanswered_request(error)
    if request is not None and request.request is not None:
        server = urlunsplit(urlsplit(request.request.url)._replace(path="", query="", fragment=""))
        return f"the MLflow tracking server at {redacted_uri(server)} did not answer: {root_cause(request)}"
    if isinstance(error, MlflowException):
        return error.message
    return str(error) or type(error).__name__


P = ParamSpec("P")
R = TypeVar("R")


def talks_to_mlflow(step: Callable[P, R]) -> Callable[P, R]:
    """A step that calls MLflow: when the tracking server does not answer, it fails with
    :class:`TrackingUnavailable` naming the server, not with MLflow's traceback."""

    @functools.wraps(step)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return step(*args, **kwargs)
        except MlflowException as error:
            if unanswered_request(error) is None:
                raise
            raise TrackingUnavailable(
                f"{describe_failure(error)} (start it, or point FPGAFLOW_MLFLOW_TRACKING_URI at a running one)"
            ) from error

    return guarded


def experiment_artifact_location(settings: Settings) -> str | None:
    """Where a new experiment keeps its artifacts (never ``./mlruns`` of the working directory)."""
    if settings.mlflow_artifact_root:
        return f"{settings.mlflow_artifact_root.rstrip('/')}/{settings.mlflow_experiment}"
    if urlsplit(settings.mlflow_tracking_uri).scheme in REMOTE_TRACKING_SCHEMES:
        return None
    return str(settings.home / "mlartifacts" / settings.mlflow_experiment)


def ensure_experiment(client: MlflowClient, settings: Settings) -> str:
    """The id of the configured experiment, created (or restored from deletion) when needed."""
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is None:
        return client.create_experiment(settings.mlflow_experiment, artifact_location=experiment_artifact_location(settings))
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def git_commit(directory: Path | None = None) -> str | None:
    """The commit checked out in ``directory`` (default: the working directory), if it is a git work tree."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory or Path.cwd(),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def prefect_flow_run() -> tuple[str | None, str | None]:
    """(flow run id, UI URL) of the Prefect flow run this code runs in; (None, None) outside a flow.

    The URL is known only when a Prefect UI is configured (``PREFECT_UI_URL``, set for a real server).
    """
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_UI_URL

    run_id = flow_run.id
    if run_id is None:
        return None, None
    return str(run_id), flow_run.ui_url if PREFECT_UI_URL.value() else None


def lineage_tags(model_name: str, dataset_fingerprint: str) -> dict[str, str]:
    tags = {TAG_MODEL_NAME: model_name, TAG_DATASET_FINGERPRINT: dataset_fingerprint}
    commit = git_commit()
    if commit:
        tags[TAG_GIT_COMMIT] = commit
    flow_run_id, flow_run_url = prefect_flow_run()
    if flow_run_id:
        tags[TAG_FLOW_RUN_ID] = flow_run_id
    if flow_run_url:
        tags[TAG_FLOW_RUN_URL] = flow_run_url
    return tags


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → MLflow params: ``{"training": {"epochs": 3}}`` → ``{"training.epochs": "3"}``."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(str(item) for item in value)
        else:
            flat[name] = str(value)
    return flat


@talks_to_mlflow
def start_pipeline_run(
    config: PipelineConfig,
    dataset_fingerprint: str,
    settings: Settings | None = None,
    run_name: str | None = None,
) -> str:
    """Open the MLflow run of one pipeline run: config as params, lineage as tags. Returns the run id."""
    settings = settings or get_settings()
    if not dataset_fingerprint:
        raise PipelineStepError("dataset_fingerprint is empty: the intake step must fingerprint the dataset before tracking starts")
    client = mlflow_client(settings)
    experiment_id = ensure_experiment(client, settings)
    run = client.create_run(
        experiment_id,
        run_name=run_name,
        tags=lineage_tags(config.resolved_model_name, dataset_fingerprint),
    )
    params = flatten(config.model_dump(mode="json"))
    client.log_batch(run.info.run_id, params=[Param(key, value) for key, value in params.items()])
    return run.info.run_id


def log_file(run_id: str, path: Path, artifact_dir: str | None, settings: Settings | None = None) -> str:
    """Log one file into the run's artifacts; returns its artifact path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot log {path} to MLflow run {run_id}: no such file")
    mlflow_client(settings).log_artifact(run_id, str(path), artifact_dir)
    return f"{artifact_dir}/{path.name}" if artifact_dir else path.name


def split_counts(split_manifest: Path) -> dict[str, int]:
    """Images per split from a split manifest CSV with a ``split`` column ({} without one)."""
    with Path(split_manifest).open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "split" not in reader.fieldnames:
            return {}
        return dict(Counter(row["split"] for row in reader))


@talks_to_mlflow
def log_data_lineage(
    run_id: str, validation_report: Path, split_manifest: Path, settings: Settings | None = None
) -> None:
    """The data the run trained on: the validation report, the split manifest and split sizes."""
    log_file(run_id, validation_report, ARTIFACT_DATA_DIR, settings)
    log_file(run_id, split_manifest, ARTIFACT_DATA_DIR, settings)
    counts = split_counts(split_manifest)
    if counts:
        mlflow_client(settings).log_batch(
            run_id, params=[Param(SPLIT_PARAM.format(split=split), str(count)) for split, count in sorted(counts.items())]
        )


def split_sizes(params: Mapping[str, str]) -> dict[str, int]:
    """Images per split as :func:`log_data_lineage` recorded them in a run's params."""
    prefix, suffix = SPLIT_PARAM.split("{split}")
    return {
        key.removeprefix(prefix).removesuffix(suffix): int(value)
        for key, value in params.items()
        if key.startswith(prefix) and key.endswith(suffix)
    }


def evaluation_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """A run's evaluation metrics without their ``test_`` prefix."""
    return {key.removeprefix(TEST_METRIC_PREFIX): value for key, value in metrics.items() if key.startswith(TEST_METRIC_PREFIX)}


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise PipelineStepError(f"{what} must be a number, got {value!r}")
    return float(value)


def _log_metrics(client: MlflowClient, run_id: str, metrics: Iterable[Metric]) -> None:
    batch = list(metrics)
    for start in range(0, len(batch), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=batch[start : start + MAX_METRICS_PER_BATCH])


def history_metrics(history: list[Mapping[str, Any]]) -> list[Metric]:
    """Per-epoch training records → MLflow metrics with step = epoch (``epoch`` key, else position)."""
    timestamp = int(time.time() * 1000)
    metrics = []
    for position, record in enumerate(history):
        epoch = int(record.get("epoch", position))
        for key, value in record.items():
            if key != "epoch":
                metrics.append(Metric(key, _number(value, f"history[{position}][{key!r}]"), timestamp, epoch))
    return metrics


@talks_to_mlflow
def log_training(
    run_id: str,
    history: list[Mapping[str, Any]],
    metrics: Mapping[str, Any],
    *,
    per_class: Any = None,
    confusion_matrix: Path | None = None,
    featurizer_info: Any = None,
    settings: Settings | None = None,
) -> None:
    """Training curves (step = epoch), test metrics (``test_`` prefix) and evaluation artifacts."""
    client = mlflow_client(settings)
    timestamp = int(time.time() * 1000)
    evaluation = [
        Metric(f"{TEST_METRIC_PREFIX}{key}", _number(value, f"evaluation metric {key!r}"), timestamp, 0)
        for key, value in metrics.items()
    ]
    _log_metrics(client, run_id, history_metrics(history) + evaluation)
    if per_class is not None:
        client.log_dict(run_id, to_jsonable_python(per_class), f"{ARTIFACT_EVALUATION_DIR}/per_class.json")
    if confusion_matrix is not None:
        log_file(run_id, confusion_matrix, ARTIFACT_EVALUATION_DIR, settings)
    if featurizer_info is not None:
        info = to_jsonable_python(featurizer_info)
        if not isinstance(info, dict):
            raise PipelineStepError(f"featurizer_info must be a mapping or a pydantic model, got {type(featurizer_info).__name__}")
        client.log_dict(run_id, info, f"{ARTIFACT_EVALUATION_DIR}/featurizer.json")
        scalars = {key: value for key, value in info.items() if isinstance(value, (str, int, float, bool))}
        client.log_batch(run_id, params=[Param(f"{FEATURIZER_PARAM_PREFIX}{key}", str(value)) for key, value in scalars.items()])


@talks_to_mlflow
def log_conversion(run_id: str, report: ConversionReport, settings: Settings | None = None) -> None:
    """Parity measures as metrics and the full conversion report as an artifact."""
    client = mlflow_client(settings)
    timestamp = int(time.time() * 1000)
    metrics = []
    for stage, parity in report.stages.items():
        for measure in ("max_abs_diff", "scaled_diff", "top1_agreement"):
            value = getattr(parity, measure)
            if value is not None:
                metrics.append(Metric(parity_metric(stage, measure), value, timestamp, 0))
    _log_metrics(client, run_id, metrics)
    client.log_text(run_id, report.model_dump_json(indent=2), ARTIFACT_CONVERSION_REPORT)


def numerics_gate(numeric_format: str, outcome: FormatOutcome) -> Gate:
    """The gate of one format; the numerics step's own message when it gave one."""
    detail = outcome.message or f"accuracy {outcome.accuracy:.4f}, delta to fp32 {outcome.delta * 100:+.2f} points"
    return Gate(name=numeric_format, passed=outcome.passed, detail=detail)


@talks_to_mlflow
def log_numerics(run_id: str, outcomes: Mapping[str, Any], settings: Settings | None = None) -> dict[str, FormatOutcome]:
    """Per-format accuracy and delta to fp32 as metrics; each format's gate outcome as a run tag."""
    coerced = coerce_outcomes(outcomes)
    timestamp = int(time.time() * 1000)
    metrics = []
    for numeric_format, outcome in coerced.items():
        for measure in ("accuracy", "delta"):
            value = getattr(outcome, measure)
            if not math.isfinite(value):
                raise PipelineStepError(f"numerics result for {numeric_format!r} has a non-finite {measure}: {value}")
            metrics.append(Metric(numerics_metric(numeric_format, measure), value, timestamp, 0))
    client = mlflow_client(settings)
    _log_metrics(client, run_id, metrics)
    client.log_batch(
        run_id,
        tags=[RunTag(f"{GATE_TAG_PREFIX}{name}", numerics_gate(name, outcome).tag_value()) for name, outcome in coerced.items()],
    )
    return coerced


@talks_to_mlflow
def finish_run(run_id: str, succeeded: bool = True, settings: Settings | None = None) -> None:
    mlflow_client(settings).set_terminated(run_id, "FINISHED" if succeeded else "FAILED")


def mlflow_ui_url(settings: Settings | None = None) -> str:
    """Where people open the MLflow UI: the tracking server itself, or `mlflow/start-local-ui`'s default."""
    settings = settings or get_settings()
    uri = settings.mlflow_tracking_uri
    return uri.rstrip("/") if urlsplit(uri).scheme in ("http", "https") else "http://127.0.0.1:5000"


@talks_to_mlflow
def run_url(run_id: str, settings: Settings | None = None) -> str:
    run = mlflow_client(settings).get_run(run_id)
    return f"{mlflow_ui_url(settings)}/#/experiments/{run.info.experiment_id}/runs/{run_id}"


@task(name="start-mlflow-run", cache_policy=NO_CACHE)
def start_pipeline_run_task(config: PipelineConfig, dataset_fingerprint: str) -> str:
    run_id = start_pipeline_run(config, dataset_fingerprint)
    publish_link("mlflow-run", run_url(run_id), f"MLflow run {run_id}", "the MLflow run of this pipeline run")
    return run_id


@task(name="log-data-lineage", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def log_data_lineage_task(run_id: str, validation_report: Path, split_manifest: Path) -> None:
    log_data_lineage(run_id, validation_report, split_manifest)


@task(name="log-training", cache_policy=NO_CACHE)
def log_training_task(
    run_id: str,
    history: list[Mapping[str, Any]],
    metrics: Mapping[str, Any],
    per_class: Any = None,
    confusion_matrix: Path | None = None,
    featurizer_info: Any = None,
) -> None:
    log_training(
        run_id, history, metrics, per_class=per_class, confusion_matrix=confusion_matrix, featurizer_info=featurizer_info
    )


@task(name="log-numerics", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def log_numerics_task(run_id: str, outcomes: Mapping[str, Any]) -> dict[str, FormatOutcome]:
    return log_numerics(run_id, outcomes)


@task(name="finish-mlflow-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def finish_run_task(run_id: str, succeeded: bool = True) -> None:
    finish_run(run_id, succeeded)
