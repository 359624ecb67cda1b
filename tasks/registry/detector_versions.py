"""Registering a trained detector: the classifier's registry step (:mod:`fpgaflow.tasks.registry.versions`) for detectors.

The logged model is the detector's FPGA stage as an MLflow Keras model named ``detector``
(preprocessed image in → the head tensors out, with a tensor signature and the class names as
metadata); its CPU stage (decoding + NMS, already ONNX) and the detector's facts are logged into the
model's artifacts beside it, so the logged model holds everything training produced. The version,
its tags and its model card are made as for a classifier, so :func:`fpgaflow.tasks.registry.versions.publish_version`
and :func:`fpgaflow.tasks.registry.versions.promote` work on it unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus
from prefect import task
from prefect.cache_policies import NO_CACHE

from fpgaflow.fpga_runtime.service import check_name
from fpgaflow.fpga_runtime.settings import Settings, get_settings
from fpgaflow.tasks.conversion.onnx_stages import FPGA_INPUT, load_keras_model
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.registry.versions import RegisteredVersion, publish_registration, register_run_model
from fpgaflow.tasks.detection.export import DetectorFiles
from fpgaflow.tasks.registry.tracking import mlflow_client

LOGGED_MODEL_NAME = "detector"
STAGE_ARTIFACTS = "stages"


def detector_signature(model):
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, *tuple(model.inputs[0].shape)[1:]), FPGA_INPUT)])
    outputs = Schema([
        TensorSpec(np.dtype(np.float32), (-1, *tuple(tensor.shape)[1:]), name)
        for name, tensor in zip(model.output_names, model.outputs)
    ])
    return ModelSignature(inputs=inputs, outputs=outputs)


def logged_detector_id(client: MlflowClient, experiment_id: str, run_id: str) -> str | None:
    """Model id of the detector this run already logged (a retried step), if any."""
    models = client.search_logged_models(
        [experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{LOGGED_MODEL_NAME}'"
    )
    ready = [model for model in models if model.status == LoggedModelStatus.READY]
    return ready[0].model_id if ready else None


def log_detector(client: MlflowClient, experiment_id: str, run_id: str, files: DetectorFiles, class_names: Sequence[str]) -> str:
    """Log the detector (FPGA stage as a Keras model, CPU stage and facts as its artifacts); returns the model id."""
    import keras
    import mlflow.keras
    import tensorflow as tf
    from mlflow.models import Model

    model = load_keras_model(files.fpga_stage)
    exported_names = json.loads(files.class_names.read_text())
    if list(exported_names) != list(class_names):
        raise PipelineStepError(f"the detector was trained for classes {exported_names}, not {list(class_names)}")
    logged = client.create_logged_model(
        experiment_id, name=LOGGED_MODEL_NAME, source_run_id=run_id, params=client.get_run(run_id).data.params
    )
    info = Model.log(
        artifact_path=None,
        name=LOGGED_MODEL_NAME,
        flavor=mlflow.keras,
        run_id=run_id,
        model_id=logged.model_id,
        model=model,
        signature=detector_signature(model),
        pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
        metadata={"class_names": list(class_names), "task": "detection", "cpu_stage": f"{STAGE_ARTIFACTS}/{files.cpu_stage.name}"},
    )
    for path in (files.cpu_stage, files.featurizer, files.detection_config):
        client.log_model_artifact(info.model_id, str(path), STAGE_ARTIFACTS)
    return info.model_id


def register_trained_detector(run_id: str, model_name: str, fpga_model_path: Path, cpu_model_path: Path,
                              class_names: Sequence[str], settings: Settings | None = None) -> RegisteredVersion:
    """Create the model version of this run's detector; a retried step returns the same version.

    Same call as :func:`fpgaflow.tasks.registry.versions.register_trained_model`; ``cpu_model_path`` must be the
    ``cpu_stage.onnx`` exported beside ``fpga_model_path``.
    """
    settings = settings or get_settings()
    check_name(model_name, "model name")
    files = DetectorFiles(Path(fpga_model_path).parent)
    if Path(cpu_model_path).resolve() != files.cpu_stage.resolve():
        raise PipelineStepError(f"{cpu_model_path} is not the CPU stage exported beside {fpga_model_path}")
    client = mlflow_client(settings)

    def log_model(experiment_id: str) -> str:
        return logged_detector_id(client, experiment_id, run_id) or log_detector(client, experiment_id, run_id, files, class_names)

    return register_run_model(client, model_name, run_id, class_names, log_model)


@task(name="register-detector", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def register_trained_detector_task(run_id: str, model_name: str, fpga_model_path: Path, cpu_model_path: Path,
                                   class_names: Sequence[str]) -> RegisteredVersion:
    return publish_registration(register_trained_detector(run_id, model_name, fpga_model_path, cpu_model_path, class_names))
