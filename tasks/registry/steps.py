"""The registry stage's Prefect tasks: the MLflow run and what it logs, the model version of any kind, its publication,
promotion and lookup."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from fpgaflow.tasks.artifacts import publish_link, publish_markdown
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.conversion.onnx_stages import ConversionReport
from fpgaflow.tasks.registry.client import mlflow_ui_url, run_url
from fpgaflow.tasks.registry.lookup import find_champion, resolve_version
from fpgaflow.tasks.registry.promotion import promote
from fpgaflow.tasks.registry.publication import PublishedVersion, publish_version
from fpgaflow.tasks.registry.registration import RegisteredVersion
from fpgaflow.tasks.registry.run_metrics import log_conversion, log_numerics, log_training
from fpgaflow.tasks.registry.runs import finish_run, log_data_lineage, start_pipeline_run

if TYPE_CHECKING:
    from fpgaflow.fpga_runtime.service import TensorNames
    from fpgaflow.tasks.kinds import ModelKind


@task(name="register-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def register_task(
    kind: ModelKind,
    run_id: str,
    model_name: str,
    fpga_model_path: Path,
    cpu_model_path: Path,
    class_names: Sequence[str],
    tensor_names: TensorNames,
    labels: Mapping[str, str] | None = None,
) -> RegisteredVersion:
    """The version of the model of ``kind`` this run trained; artifact ``model-registration`` links to it in the MLflow UI.

    Prints the tensor names its service answers to, as the original service's users saw them when saving a model.
    ``labels`` (the user's tags and description) are set on the version.
    """
    registered = kind.register(
        run_id, model_name, fpga_model_path, cpu_model_path, class_names, tensor_names=tensor_names, labels=labels
    )
    name, version = registered.name, registered.version
    print(f"registered {name} version {version}; its service's tensor names:")
    for key, value in tensor_names.client_names().items():
        print(f"{key} = {value!r}")
    publish_link(
        "model-registration",
        f"{mlflow_ui_url()}/#/models/{name}/versions/{version}",
        f"{name} version {version}",
        "the registered model version in the MLflow UI",
    )
    return registered


@task(name="log-conversion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def log_conversion_task(run_id: str, report: ConversionReport) -> None:
    log_conversion(run_id, report)


@task(name="start-mlflow-run", cache_policy=NO_CACHE)
def start_pipeline_run_task(config: PipelineConfig, dataset_fingerprint: str, weights_note: str = "") -> str:
    run_id = start_pipeline_run(config, dataset_fingerprint, weights_note=weights_note)
    publish_link("mlflow-run", run_url(run_id), f"MLflow run {run_id}", "the MLflow run of this pipeline run")
    return run_id


@task(name="log-data-lineage", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def log_data_lineage_task(run_id: str, validation_report: Path, split_manifest: Path) -> None:
    log_data_lineage(run_id, validation_report, split_manifest)


@task(name="log-training", cache_policy=NO_CACHE)
def log_training_task(
    run_id: str,
    history: Sequence[Mapping[str, Any]],
    metrics: Mapping[str, Any],
    per_class: Any = None,
    pictures: Sequence[Path] = (),
    featurizer_info: Any = None,
) -> None:
    log_training(run_id, history, metrics, per_class=per_class, pictures=pictures, featurizer_info=featurizer_info)


log_numerics_task = task(name="log-numerics", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)(log_numerics)


@task(name="finish-mlflow-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def finish_run_task(run_id: str, succeeded: bool = True) -> None:
    finish_run(run_id, succeeded)


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


promote_task = task(name="promote-model-version", cache_policy=NO_CACHE)(promote)


resolve_version_task = task(name="resolve-model-version", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)(
    resolve_version
)


find_champion_task = task(name="find-champion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)(find_champion)
