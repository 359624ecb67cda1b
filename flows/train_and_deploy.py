"""`train_and_deploy`: from a folder of labelled images to a deployed service, one task per step.

Classifiers and the ssd_vgg detector run the same sequence of steps; each step asks the run's model kind
(:mod:`fpgaflow.tasks.kinds`) where the two differ (data, training, registration, conversion, numerics,
packaging, smoke test).

Steps whose inputs are unchanged (same data fingerprint, same parameters, same fpgaflow version)
are read back from Prefect's result cache, so a re-run resumes after the last finished step.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import ParamSpec, TypeVar

from prefect import Task, flow
from prefect.cache_policies import CachePolicy
from prefect.runtime import flow_run

from fpgaflow.tasks.config import STEPS, PipelineConfig
from fpgaflow.tasks.conversion.onnx_stages import ParityError, load_held_out_images
from fpgaflow.tasks.conversion.steps import convert_task
from fpgaflow.tasks.data.steps import validate_data
from fpgaflow.tasks.deployment.steps import deploy_task, smoke_test_task
from fpgaflow.tasks.featurizers.steps import choose_weights_task
from fpgaflow.tasks.featurizers.weights_store import WeightsChoice
from fpgaflow.tasks.kinds import kind_of
from fpgaflow.tasks.numerics.steps import evaluate_numerics_task
from fpgaflow.tasks.packaging.image_build import ImageBuildFailed
from fpgaflow.tasks.packaging.steps import build_image_task, package_task
from fpgaflow.tasks.registry.publication import pipeline_summary
from fpgaflow.tasks.registry.registration import label_tags
from fpgaflow.tasks.registry.steps import (
    finish_run_task,
    log_conversion_task,
    log_data_lineage_task,
    log_numerics_task,
    log_training_task,
    publish_version_task,
    register_task,
    start_pipeline_run_task,
)
from fpgaflow.tasks.settings import get_pipeline_settings
from fpgaflow.tasks.training.steps import train_task

# Fields that change where a run ends or deploys, not what it computes; the labels of the registered
# version are set again by every run, cached or not.
NOT_IN_CACHE_KEY = {"until", "target", "replicas", "base_image", "tags", "description"}


def _reached(config: PipelineConfig, step: str) -> bool:
    """True once ``step`` is the last one the run was asked to do."""
    return STEPS.index(step) >= STEPS.index(config.until)


def run_key(config: PipelineConfig, dataset_fingerprint: str) -> str:
    """Identifies what a run computes and where it records it: data, parameters, fpgaflow version, home, MLflow store."""
    parameters = config.model_dump(mode="json", exclude=NOT_IN_CACHE_KEY)
    settings = get_pipeline_settings()
    text = json.dumps(
        [dataset_fingerprint, parameters, metadata.version("fpgaflow"), str(settings.home), settings.mlflow_tracking_uri],
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


P = ParamSpec("P")
R = TypeVar("R")


def cached(task: Task[P, R], key: str, step: str) -> Task[P, R]:
    """The task with its result persisted and reused under ``step`` of this run key."""
    return task.with_options(cache_policy=CachePolicy.from_cache_key_fn(lambda *_: f"fpgaflow-{key}-{step}"), persist_result=True)


def _serving_image(service_dir: Path, config: PipelineConfig) -> tuple[str | None, str]:
    """The image build step: (tag, "") or, where the local target does not need it, (None, why not)."""
    state = build_image_task(service_dir, base_image=config.base_image or None, return_state=True)
    try:
        result = state.result()
    except ImageBuildFailed as error:
        if config.target != "local":
            raise
        return None, str(error)
    return result.image, result.reason


@flow(name="train_and_deploy", log_prints=True)
def train_and_deploy(config: PipelineConfig, weights: WeightsChoice | None = None) -> dict:
    """Run the pipeline up to ``config.until`` and return the run summary (the CLI's ``--json``).

    The featurizer's weights are obtained right after validation (``weights``, when the caller already
    chose them): a run that cannot have them stops before training and before MLflow hears of it;
    'auto' without them says so and goes on from seeded random initialisation."""
    kind = kind_of(config)
    summary: dict = {"flow_run_id": str(flow_run.get_id())}
    intake = validate_data(kind, config.data_dir)
    summary.update(intake.summary())
    if _reached(config, "validate"):
        return summary

    weights = weights or choose_weights_task(config.weights, config.featurizer, config.imagenet_top)
    config = config.model_copy(update={"weights": weights.used})
    print(f"featurizer weights: {weights.note}")
    summary.update(weights=weights.used, weights_note=weights.note)

    key = run_key(config, intake.dataset_fingerprint)
    run_dir = get_pipeline_settings().home / "runs" / config.resolved_model_name / key
    splits = kind.load_splits(intake.split_path)
    mlflow_run_id = cached(start_pipeline_run_task, key, "mlflow-run")(config, intake.dataset_fingerprint, weights.note)
    cached(log_data_lineage_task, key, "log-data")(mlflow_run_id, Path(intake.report_path), Path(intake.split_path))
    trained = cached(train_task, key, "train")(
        kind, splits, intake.class_names, intake.dataset_fingerprint, config, run_dir / "train", mlflow_run_id
    )
    evaluation = trained.evaluation
    cached(log_training_task, key, "log-training")(
        mlflow_run_id,
        trained.history,
        evaluation.metrics,
        evaluation.per_class,
        [Path(picture) for picture in evaluation.pictures],
        trained.featurizer,
    )
    summary.update(trained.summary())
    if _reached(config, "train"):
        finish_run_task(mlflow_run_id)
        return summary

    model_name = config.resolved_model_name
    files = trained.model_files
    tensor_names = kind.tensor_names(config.featurizer)
    registered = register_task(
        kind,
        mlflow_run_id,
        model_name,
        files.fpga_stage,
        files.cpu_stage,
        intake.class_names,
        tensor_names,
        label_tags(config.tags, config.description),
    )
    summary.update(tensor_names.client_names())
    spec = trained.featurizer.preprocessing
    test_paths = list(splits.loc[splits["split"] == "test", "path"])
    try:
        conversion = cached(convert_task, key, "convert")(
            kind, files.fpga_stage, files.cpu_stage, load_held_out_images(test_paths, spec), run_dir / "onnx"
        )
    except ParityError as miss:
        if miss.report is not None:
            log_conversion_task(mlflow_run_id, miss.report)
        raise
    cached(log_conversion_task, key, "log-conversion")(mlflow_run_id, conversion)
    numerics = cached(evaluate_numerics_task, key, "numerics")(
        kind,
        conversion.fpga_onnx,
        conversion.cpu_onnx,
        splits,
        intake.class_names,
        intake.dataset_fingerprint,
        spec,
        config,
        run_dir / "numerics",
    )
    outcomes = numerics.results
    cached(log_numerics_task, key, "log-numerics")(mlflow_run_id, outcomes)
    service_dir = package_task(
        kind,
        model_name,
        registered.version,
        intake.class_names,
        spec,
        numerics.serve_format,
        numerics.served.fpga_onnx,
        numerics.served.cpu_onnx,
        {
            **registered.service_source(intake.dataset_fingerprint),
            "featurizer": trained.featurizer.name,
            "flow_run_id": summary["flow_run_id"],
        },
        tensor_names,
    )
    published = publish_version_task(model_name, registered.version, service_dir, conversion, outcomes)
    summary.update(pipeline_summary(published))
    summary.update(numerics.summary())
    summary["gates_passed"] = published.gates_passed
    finish_run_task(mlflow_run_id)
    if _reached(config, "package"):
        return summary

    image, image_reason = _serving_image(service_dir, config)
    deployed = deploy_task(
        service_dir, target=config.target, replicas=config.replicas, image=image, base_image=config.base_image or None
    )
    summary.update(deployed.summary())
    summary["image"] = image
    if image is None:
        summary["image_reason"] = image_reason
    if deployed.applied and not deployed.smoke:  # kubernetes smoke-tests inside the cluster (a Job): in the summary
        held_out = kind.smoke_images(Path(intake.split_path))[: get_pipeline_settings().smoke_test_images]
        smoke = smoke_test_task(kind, deployed.endpoint, service_dir, held_out, mlflow_run_id, run_dir / "smoke-test")
        summary["smoke_test"] = smoke.summary()
    return summary
