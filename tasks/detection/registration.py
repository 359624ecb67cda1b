"""Registering a trained detector: the classifier's registry step (:mod:`fpgaflow.tasks.registry.registration`) for detectors.

The logged model is the detector's FPGA stage as an MLflow Keras model named ``detector``
(preprocessed image in → the head tensors out, with a tensor signature and the class names as
metadata); its CPU stage (decoding + NMS, already ONNX) and the detector's facts are logged into the
model's artifacts beside it, so the logged model holds everything training produced. The version,
its tags and its model card are made as for a classifier, so :func:`fpgaflow.tasks.registry.publication.publish_version`
and :func:`fpgaflow.tasks.registry.promotion.promote` work on it unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fpgaflow.fpga_runtime.service import TensorNames, check_name
from fpgaflow.tasks.conversion.onnx_stages import FPGA_INPUT, load_keras_model
from fpgaflow.tasks.detection.export import DetectorFiles
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.registry.client import mlflow_client
from fpgaflow.tasks.registry.registration import RegisteredVersion, log_keras_model, logged_model_id, register_run_model
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings
from mlflow import MlflowClient

LOGGED_MODEL_NAME = "detector"
STAGE_ARTIFACTS = "stages"


def detector_signature(model):
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, *tuple(model.inputs[0].shape)[1:]), FPGA_INPUT)])
    outputs = Schema(
        [
            TensorSpec(np.dtype(np.float32), (-1, *tuple(tensor.shape)[1:]), name)
            for name, tensor in zip(model.output_names, model.outputs)
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_detector(client: MlflowClient, experiment_id: str, run_id: str, files: DetectorFiles, class_names: Sequence[str]) -> str:
    """Log the detector (FPGA stage as a Keras model, CPU stage and facts as its artifacts); returns the model id."""
    model = load_keras_model(files.fpga_stage)
    exported_names = json.loads(files.class_names.read_text())
    if list(exported_names) != list(class_names):
        raise PipelineStepError(f"the detector was trained for classes {exported_names}, not {list(class_names)}")
    model_id = log_keras_model(
        client,
        experiment_id,
        run_id,
        LOGGED_MODEL_NAME,
        model,
        detector_signature(model),
        {"class_names": list(class_names), "task": "detection", "cpu_stage": f"{STAGE_ARTIFACTS}/{files.cpu_stage.name}"},
    )
    for path in (files.cpu_stage, files.featurizer, files.detection_config):
        client.log_model_artifact(model_id, str(path), STAGE_ARTIFACTS)
    return model_id


def register_trained_detector(
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
    """Create the model version of this run's detector; a retried step returns the same version.

    Same call as :func:`fpgaflow.tasks.registry.registration.register_trained_model`; ``cpu_model_path`` must be the
    ``cpu_stage.onnx`` exported beside ``fpga_model_path``.
    """
    settings = settings or get_pipeline_settings()
    check_name(model_name, "model name")
    files = DetectorFiles(Path(fpga_model_path).parent)
    if Path(cpu_model_path).resolve() != files.cpu_stage.resolve():
        raise PipelineStepError(f"{cpu_model_path} is not the CPU stage exported beside {fpga_model_path}")
    client = mlflow_client(settings)

    def log_model(experiment_id: str) -> str:
        logged = logged_model_id(client, experiment_id, run_id, LOGGED_MODEL_NAME)
        return logged or log_detector(client, experiment_id, run_id, files, class_names)

    return register_run_model(client, model_name, run_id, class_names, log_model, tensor_names, labels)
