"""`fpgaflow run DATA_DIR --featurizer ssd_vgg` as a Prefect flow run: the detector goes through the same
steps as a classifier (validation, training, MLflow, ONNX, numerics, package, deployment, smoke test) and
the deployed service answers with boxes.

A 96 px detector at width 1/8 with four feature maps, trained for a few epochs on three digits, keeps
it within a CI budget; its mAP is judged by tests/integration/detection, this test judges the wiring.
"""

from __future__ import annotations

import json
from uuid import UUID

import numpy as np
import pytest

from fpgaflow.flows.cli import main
from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.tasks.artifacts import PIPELINE_ARTIFACTS
from fpgaflow.tasks.operations.monitoring import parse_endpoint
from fpgaflow.tasks.packaging.tensor_names import detector_tensor_names
from fpgaflow.tasks.registry.client import mlflow_client
from fpgaflow.tasks.registry.version_state import CANDIDATE_ALIAS
from tests.fixtures.prefect_runs import artifacts_of, assert_pictures_linked_and_logged


@pytest.fixture
def detection_dir(tmp_path):
    from fpgaflow.tasks.detection.sample_data import write_detection_sample_data

    directory = tmp_path / "digit-boxes"
    write_detection_sample_data(directory, count=120, digits=(0, 1, 7), seed=0)
    return directory


@pytest.mark.slow
def test_fpgaflow_run_trains_registers_and_deploys_a_detector(prefect_harness, pipeline_settings, detection_dir, capsys):
    arguments = [
        "run",
        str(detection_dir),
        "--featurizer",
        "ssd_vgg",
        "--weights",
        "none",
        "--input-size",
        "96",
        "--detection-width",
        "0.125",
        "--feature-maps",
        "4",
        "--epochs",
        "4",
        "--batch-size",
        "8",
        "--numerics",
        "fp32,int8",
    ]
    code = main([*arguments, "--json"])
    output = capsys.readouterr().out
    assert code == 0, output
    summary = json.loads(output.splitlines()[-1])

    assert summary["validation_success"] and summary["num_classes"] == 3 and summary["num_objects"] > 0
    assert summary["featurizer"]["name"] == "ssd_vgg" and summary["featurizer"]["feature_maps"] == 4
    assert {"map50", "map50_untrained"} <= set(summary["metrics"])
    assert set(summary["numerics"]) == {"fp32", "int8"}
    assert summary["smoke_test"]["agreement"] == 1.0 and summary["smoke_test"]["max_abs_diff"] <= 1e-4
    artifacts = artifacts_of(UUID(summary["flow_run_id"]))
    assert set(artifacts) == set(PIPELINE_ARTIFACTS)  # the classifier's keys: mAP where it has accuracy
    assert "map50" in artifacts["evaluation"].data and "ssd_vgg" in artifacts["featurizer"].data
    assert [row["class"] for row in json.loads(artifacts["test-metrics-per-class"].data)] == ["0", "1", "7"]
    assert len(json.loads(artifacts["training-epochs"].data)) == 4
    assert_pictures_linked_and_logged(
        artifacts,
        summary["mlflow_run_id"],
        {"evaluation": ["evaluation/precision_recall.png", "evaluation/sample_detections.png"]},
    )

    version = mlflow_client().get_model_version("digit-boxes", summary["model_version"])
    assert version.run_id == summary["mlflow_run_id"] and CANDIDATE_ALIAS in version.aliases

    image = sorted((detection_dir / "images").iterdir())[0]
    with PredictionClient(*parse_endpoint(summary["endpoint"])) as client:
        found = client.detect_file(image)
    assert found.boxes.shape[1:] == (4,) and set(found.labels) <= {"0", "1", "7"}
    assert summary["input_tensors"] == "Placeholder:0"
    assert summary["output_tensors"] == detector_tensor_names("ssd_vgg").output_tensors
    with PredictionClient(*parse_endpoint(summary["endpoint"])) as client:
        boxes, scores, classes, count = client.score_file(
            path=str(image), input_name=summary["input_tensors"], outputs=summary["output_tensors"]
        )
    assert int(count) == len(found.scores) and np.allclose(scores[: int(count)], found.scores)

    assert main(arguments) == 0  # a re-run: cached steps, then the next steps a user reads
    output = capsys.readouterr().out
    assert f"model_version: {summary['model_version']}" in output
    assert f"answers for {image.relative_to(detection_dir)}:" in output
    assert "fpgaflow score IMAGE --detect --address" in output
