"""Registering a trained model: the model version people review, made once per MLflow run.

Order of a pipeline run (the original service did the same: register, then convert):

1. :func:`register_trained_model` right after training: logs the trained classifier to the
   run and creates the model version (idempotent per run); a detector registers through
   :func:`register_run_model` too (:mod:`fpgaflow.tasks.detection.registration`).
2. :func:`fpgaflow.tasks.registry.publication.publish_version` after conversion, numerics and packaging.
3. :func:`fpgaflow.tasks.registry.promotion.promote` (a separate, explicit step).

The logged model is the trained classifier as one MLflow Keras model (FPGA stage followed by
CPU stage, preprocessed image in → class probabilities out, with a tensor signature and the
class names as metadata). It is what training produced, loadable with ``mlflow.keras`` or
``mlflow.pyfunc`` for review and re-evaluation; the deployable unit is the service definition
logged beside it under the run's ``service/`` artifacts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict

from fpgaflow.fpga_runtime.service import ServiceDefinition, TensorNames, check_name
from fpgaflow.tasks.conversion.onnx_stages import FPGA_INPUT, PROBABILITIES, load_keras_model
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.registry.catalog import user_tags
from fpgaflow.tasks.registry.client import mlflow_client
from fpgaflow.tasks.registry.model_card import Gate, ModelCard
from fpgaflow.tasks.registry.run_metrics import FormatOutcome, evaluation_metrics
from fpgaflow.tasks.registry.runs import (
    FEATURIZER_PARAM_PREFIX,
    TAG_DATASET_FINGERPRINT,
    TAG_FLOW_RUN_ID,
    TAG_FLOW_RUN_URL,
    TAG_WEIGHTS,
    split_sizes,
)
from fpgaflow.tasks.registry.version_state import (
    TAG_DESCRIPTION,
    TAG_FEATURIZER,
    TAG_INPUT_TENSORS,
    TAG_OUTPUT_TENSORS,
    TAG_RUN_ID,
    TAG_STATUS,
    VersionStatus,
    get_version,
    resumable_step,
)
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings
from mlflow import MlflowClient

LOGGED_MODEL_NAME = "classifier"


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


def find_version_for_run(client: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    """The version of ``name`` created from ``run_id``, if any (the lowest, should there be several)."""
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return min(versions, key=lambda version: int(version.version)) if versions else None


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(
            name, description="Image model built by the fpgaflow pipeline; each version describes itself in its model card."
        )
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


def logged_model_id(client: MlflowClient, experiment_id: str, run_id: str, name: str) -> str | None:
    """Model id of the model ``name`` this run already logged (a retried step), if any."""
    models = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'")
    ready = [model for model in models if model.status == LoggedModelStatus.READY]
    return ready[0].model_id if ready else None


def log_keras_model(
    client: MlflowClient, experiment_id: str, run_id: str, name: str, model, signature, metadata: Mapping[str, Any]
) -> str:
    """Log a Keras ``model`` as the MLflow model ``name`` of the run; returns its model id.

    The logged model is created in the run's experiment explicitly: left to itself, MLflow would
    file a model logged outside an active run under the default experiment (``./mlruns``).
    """
    import keras
    import mlflow.keras
    import tensorflow as tf
    from mlflow.models import Model

    logged = client.create_logged_model(experiment_id, name=name, source_run_id=run_id, params=client.get_run(run_id).data.params)
    info = Model.log(
        artifact_path=None,
        name=name,
        flavor=mlflow.keras,
        run_id=run_id,
        model_id=logged.model_id,
        model=model,
        signature=signature,
        pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
        metadata=dict(metadata),
    )
    return info.model_id


def log_classifier(
    client: MlflowClient,
    experiment_id: str,
    run_id: str,
    fpga_model_path: Path,
    cpu_model_path: Path,
    class_names: Sequence[str],
) -> str:
    """Log the trained classifier (both stages as one Keras model) to the run; returns its model id."""
    classifier = compose_classifier(load_keras_model(fpga_model_path), load_keras_model(cpu_model_path))
    classes = int(classifier.outputs[0].shape[-1])
    if classes != len(class_names):
        raise PipelineStepError(f"the CPU stage scores {classes} classes but {len(class_names)} class names were given")
    return log_keras_model(
        client,
        experiment_id,
        run_id,
        LOGGED_MODEL_NAME,
        classifier,
        classifier_signature(classifier),
        {"class_names": list(class_names)},
    )


def tensor_name_tags(names: TensorNames) -> dict[str, str]:
    """The version tags holding a service's tensor names: ``input_tensors``, and ``output_tensors`` (a JSON list if several)."""
    outputs = names.output_tensors
    return {
        TAG_INPUT_TENSORS: names.input_tensors,
        TAG_OUTPUT_TENSORS: outputs if isinstance(outputs, str) else json.dumps(outputs),
    }


def create_version(
    client: MlflowClient, model_name: str, run_id: str, log_model: Callable[[str], str], tensor_names: TensorNames | None = None
) -> ModelVersion:
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
            **(tensor_name_tags(tensor_names) if tensor_names else {}),
            TAG_STATUS: VersionStatus.REGISTERING,
        },
    )


def label_tags(tags: Mapping[str, str], description: str) -> dict[str, str]:
    """The version tags of a user's ``--tag KEY=VALUE`` labels and ``--description``."""
    return {**tags, **({TAG_DESCRIPTION: description} if description else {})}


def register_run_model(
    client: MlflowClient,
    model_name: str,
    run_id: str,
    class_names: Sequence[str],
    log_model: Callable[[str], str],
    tensor_names: TensorNames | None = None,
    labels: Mapping[str, str] | None = None,
) -> RegisteredVersion:
    """The version of the model ``run_id`` trained: created once, completed by a retry, never made twice.

    ``log_model(experiment_id)`` logs the trained model to the run and returns its model id; it is
    called only while the run has no version. A retry finds the version by its run, also when the
    creating call failed after the registry had made it, and writes its model card if that is missing.
    ``labels`` (:func:`label_tags`) are set on the version each time, before its card is written.
    """
    with resumable_step("registering", f"{model_name} from MLflow run {run_id}"):
        version = find_version_for_run(client, model_name, run_id)
        if version is None:
            version = create_version(client, model_name, run_id, log_model, tensor_names)
        for key, value in (labels or {}).items():
            client.set_model_version_tag(model_name, str(version.version), key, value)
    number = str(version.version)
    if version.tags.get(TAG_STATUS) == VersionStatus.REGISTERING:
        with resumable_step("registering", f"{model_name} version {number}"):
            card = model_card_from_run(client, model_name, number, run_id, class_names=tuple(class_names))
            client.update_model_version(model_name, number, description=card.markdown())
            client.set_model_version_tag(model_name, number, TAG_STATUS, VersionStatus.REGISTERED)
    assert version.source is not None, "MLflow creates every model version with a source"
    return RegisteredVersion(name=model_name, version=number, run_id=run_id, source=version.source)


def register_trained_model(
    run_id: str,
    model_name: str,
    fpga_model_path: Path,
    cpu_model_path: Path,
    class_names: Sequence[str],
    settings: PipelineSettings | None = None,
    *,
    tensor_names: TensorNames | None = None,
    labels: Mapping[str, str] | None = None,
) -> RegisteredVersion:
    """Create the model version of this run's trained model; a retried step returns the same version.

    ``tensor_names``, the names clients may use for its service's input and outputs, are tagged on the version,
    and so are the user's ``labels`` (:func:`label_tags`).
    """
    settings = settings or get_pipeline_settings()
    check_name(model_name, "model name")
    client = mlflow_client(settings)

    def log_model(experiment_id: str) -> str:
        return logged_model_id(client, experiment_id, run_id, LOGGED_MODEL_NAME) or log_classifier(
            client, experiment_id, run_id, fpga_model_path, cpu_model_path, class_names
        )

    return register_run_model(client, model_name, run_id, class_names, log_model, tensor_names, labels)


def _int_param(value: str | None) -> int | None:
    """A whole-number run param (MLflow keeps params as text), None when the run has none."""
    return None if value is None else int(value)


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
    version_tags = get_version(client, name, version).tags
    return ModelCard(
        name=name,
        version=version,
        description=version_tags.get(TAG_DESCRIPTION, ""),
        labels=user_tags(version_tags),
        dataset_fingerprint=run.data.tags.get(TAG_DATASET_FINGERPRINT, ""),
        flow_run_id=run.data.tags.get(TAG_FLOW_RUN_ID, ""),
        flow_run_url=run.data.tags.get(TAG_FLOW_RUN_URL, ""),
        split_sizes=split_sizes(params),
        class_names=class_names,
        featurizer=params.get("featurizer", "unknown"),
        weights=params.get("weights", "unknown"),
        weights_note=run.data.tags.get(TAG_WEIGHTS, ""),
        input_size=params.get("input_size", "?"),
        parameter_count=_int_param(params.get(f"{FEATURIZER_PARAM_PREFIX}parameter_count")),
        mac_count=_int_param(params.get(f"{FEATURIZER_PARAM_PREFIX}mac_count")),
        test_metrics=evaluation_metrics(run.data.metrics),
        numeric_format=service.numeric_format if service else "",
        numerics={fmt: (outcome.accuracy, outcome.delta) for fmt, outcome in (numerics or {}).items()},
        gates=gates,
    )
