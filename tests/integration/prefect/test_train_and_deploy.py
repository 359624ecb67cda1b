"""train_and_deploy end to end as a Prefect flow run: artifacts for every step, the MLflow run and
version, a deployed service that answers, and a re-run that reuses the cached steps (one test: a
pipeline run is the costly part, so the re-run follows the first run in the same home)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fpgaflow.flows.train_and_deploy import train_and_deploy
from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.tasks.artifacts import PIPELINE_ARTIFACTS
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.operations.monitoring import parse_endpoint
from fpgaflow.tasks.registry.client import mlflow_client
from fpgaflow.tasks.registry.runs import TAG_FLOW_RUN_ID
from fpgaflow.tasks.registry.version_state import CANDIDATE_ALIAS, TAG_INPUT_TENSORS, TAG_OUTPUT_TENSORS
from tests.fixtures.prefect_runs import artifacts_of, assert_pictures_linked_and_logged


def small_config(data_dir, until="deploy") -> PipelineConfig:
    # ResNet-50 at 32 px from random weights; in msfp9 its weights fit one stratix10 device.
    return PipelineConfig(
        data_dir=data_dir,
        model_name="digits",
        featurizer="resnet50",
        weights="none",
        input_size=32,
        numerics=("fp32", "msfp9"),
        serve_format="msfp9",
        max_accuracy_drop=1.0,
        until=until,
        training={"hidden_units": 0, "epochs": 3},
    )


def task_states(flow_run_id) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name.rsplit("-", 1)[0]: run.state.name for run in runs}


@pytest.mark.slow
def test_train_and_deploy_tracks_every_step_serves_and_a_rerun_reuses_cached_steps(
    prefect_harness, pipeline_settings, digits_dir
):
    state = train_and_deploy(small_config(digits_dir), return_state=True)
    summary = state.result()
    flow_run_id = state.state_details.flow_run_id

    artifacts = artifacts_of(flow_run_id)
    assert set(artifacts) == set(PIPELINE_ARTIFACTS)
    assert "accuracy" in artifacts["evaluation"].data
    assert {row["class"] for row in json.loads(artifacts["test-metrics-per-class"].data)} == {str(d) for d in range(10)}
    assert_pictures_linked_and_logged(
        artifacts,
        summary["mlflow_run_id"],
        {"evaluation": ["evaluation/confusion_matrix.png", "evaluation/per_class_metrics.png"]},
    )
    assert summary["flow_run_id"] == str(flow_run_id)
    assert summary["validation_success"] and summary["num_classes"] == 10
    assert summary["metrics"]["accuracy"] > 0.3
    assert summary["serve_format"] == "msfp9" and set(summary["numerics"]) == {"fp32", "msfp9"}
    assert summary["serve_format_reason"].startswith("msfp9: as configured (serve_format: msfp9); (modelled ")
    for values in summary["numerics"].values():
        assert set(values) == {"accuracy", "delta", "passed", "modelled_ms", "measured_ms"}
        assert values["passed"] and values["modelled_ms"] > 0 and values["measured_ms"] > 0
    assert summary["numerics"]["msfp9"]["modelled_ms"] < summary["numerics"]["fp32"]["modelled_ms"]
    assert summary["image"] is None and "docker" in summary["image_reason"].lower()
    assert (summary["target"], summary["replicas"]) == ("local", 1)
    assert summary["smoke_test"]["top1_agreement"] == 1.0

    client = mlflow_client()
    run = client.get_run(summary["mlflow_run_id"])
    assert run.data.tags[TAG_FLOW_RUN_ID] == str(flow_run_id)
    version = client.get_model_version("digits", summary["model_version"])
    assert version.run_id == summary["mlflow_run_id"]
    assert CANDIDATE_ALIAS in version.aliases
    input_tensors, output_tensors = summary["input_tensors"], summary["output_tensors"]
    assert (input_tensors, output_tensors) == ("Placeholder:0", "classifier/resnet_v1_50/predictions/Softmax:0")
    assert (version.tags[TAG_INPUT_TENSORS], version.tags[TAG_OUTPUT_TENSORS]) == (input_tensors, output_tensors)

    image = next(path for path in sorted((digits_dir / "3").iterdir()))
    with PredictionClient(*parse_endpoint(summary["endpoint"])) as prediction_client:
        probabilities = prediction_client.score_file(image)
    assert probabilities.shape == (10,) and np.isclose(probabilities.sum(), 1.0, atol=1e-4)
    address, port = parse_endpoint(summary["endpoint"])
    client = PredictionClient(address, port, False, "", "digits")
    result = client.score_file(path=str(image), input_name=input_tensors, outputs=output_tensors)
    np.testing.assert_array_equal(result, probabilities)
    client.close()

    assert_rerun_reuses_cached_steps(digits_dir, summary)


def assert_rerun_reuses_cached_steps(digits_dir, first: dict) -> None:
    """The same data and parameters again (up to packaging, which is not part of the cache key): every step
    that computes comes from the cache, into the same MLflow run and model version."""
    state = train_and_deploy(small_config(digits_dir, until="package"), return_state=True)
    second = state.result()

    states = task_states(state.state_details.flow_run_id)
    assert {states[step] for step in ("start-mlflow-run", "train", "convert-to-onnx", "numerics")} == {"Cached"}
    assert (second["mlflow_run_id"], second["model_version"]) == (first["mlflow_run_id"], first["model_version"])
    assert second["metrics"] == first["metrics"]
