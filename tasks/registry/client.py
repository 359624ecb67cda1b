"""The MLflow client of the pipeline, and what a failed call to the tracking server becomes.

Every step talks to MLflow through an explicit :class:`~mlflow.MlflowClient` from :func:`mlflow_client`,
never through a process-wide "active run"; :func:`talks_to_mlflow` turns a tracking server that does
not answer into :class:`TrackingUnavailable` naming it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT
from mlflow.exceptions import MlflowException

import mlflow
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.settings import DEFAULT_UI_PORTS, PipelineSettings, get_pipeline_settings
from mlflow import MlflowClient

REMOTE_TRACKING_SCHEMES = ("http", "https", "databricks")


class TrackingUnavailable(PipelineStepError):
    """The MLflow tracking server did not answer (down, unreachable, or failing every request)."""


def mlflow_client(settings: PipelineSettings | None = None) -> MlflowClient:
    """Point MLflow at the configured tracking/registry URI and return a client for it.

    The process-wide URI is set too, because MLflow's model logging resolves it globally; so are the
    retries and timeout of requests to a tracking server, which MLflow reads from its environment.
    """
    settings = settings or get_pipeline_settings()
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
    if request is not None and request.request is not None and isinstance(request.request.url, str):
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


def experiment_artifact_location(settings: PipelineSettings) -> str | None:
    """Where a new experiment keeps its artifacts (never ``./mlruns`` of the working directory)."""
    if settings.mlflow_artifact_root:
        return f"{settings.mlflow_artifact_root.rstrip('/')}/{settings.mlflow_experiment}"
    if urlsplit(settings.mlflow_tracking_uri).scheme in REMOTE_TRACKING_SCHEMES:
        return None
    return str(settings.home / "mlartifacts" / settings.mlflow_experiment)


def ensure_experiment(client: MlflowClient, settings: PipelineSettings) -> str:
    """The id of the configured experiment, created (or restored from deletion) when needed."""
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is None:
        try:
            return client.create_experiment(settings.mlflow_experiment, artifact_location=experiment_artifact_location(settings))
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":  # another run against the same server created it first
                raise
            experiment = client.get_experiment_by_name(settings.mlflow_experiment)
            assert experiment is not None, "an experiment that already exists is found by its name"
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def mlflow_ui_url(settings: PipelineSettings | None = None) -> str:
    """Where people open the MLflow UI: the configured URL, the tracking server itself, or `fpgaflow ui mlflow`'s default."""
    settings = settings or get_pipeline_settings()
    uri = settings.mlflow_tracking_uri
    if settings.mlflow_ui_url:
        return settings.mlflow_ui_url.rstrip("/")
    return uri.rstrip("/") if urlsplit(uri).scheme in ("http", "https") else f"http://127.0.0.1:{DEFAULT_UI_PORTS['mlflow']}"


@talks_to_mlflow
def run_url(run_id: str, settings: PipelineSettings | None = None) -> str:
    run = mlflow_client(settings).get_run(run_id)
    return f"{mlflow_ui_url(settings)}/#/experiments/{run.info.experiment_id}/runs/{run_id}"


def artifact_links(run_id: str, artifact_paths: Sequence[str], settings: PipelineSettings | None = None) -> str:
    """Markdown lines naming each artifact path of the run, each linked to that artifact in the MLflow UI."""
    if not artifact_paths:
        return ""
    base = run_url(run_id, settings)
    lines = [f"- [`{path}`]({base}/artifactPath/{path})" for path in artifact_paths]
    return f"In MLflow run `{run_id}`:\n\n" + "\n".join(lines) + "\n"
