"""The monitor's accuracy against a real node (started in process on a free port)."""

from __future__ import annotations

from functools import partial

import pytest

from fpgaflow.fpga_runtime.server import create_server
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.events import MODEL_DEGRADED, MODEL_RESOURCE_PREFIX, RESOURCE_ID, model_resource
from fpgaflow.tasks.operations import monitoring
from fpgaflow.tasks.operations.monitoring import degraded_payload, emit_model_degraded, parse_endpoint, result_description
from fpgaflow.tasks.operations.scoring import ACCURACY
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.labelled_images import HOLDOUT_CORRECT, HOLDOUT_IMAGES, write_labelled_folder

READY_TIMEOUT = 60
monitor_endpoint = partial(monitoring.monitor_endpoint, measure_of={"classification": ACCURACY}.__getitem__)


@pytest.fixture(scope="module")
def endpoint(tiny_service_dir):
    node, port = create_server(tiny_service_dir, "127.0.0.1:0", device_profile="arria10")
    node.start()
    node.wait_until_ready(READY_TIMEOUT)
    yield f"127.0.0.1:{port}"
    node.stop(0).wait()


def test_accuracy_per_class_against_the_served_model(endpoint, holdout_dir):
    result = monitor_endpoint(endpoint, holdout_dir, "tiny", threshold=0.5)

    assert (result.report.images, result.report.correct) == (HOLDOUT_IMAGES, HOLDOUT_CORRECT)
    assert sum(row.images for row in result.report.per_class) == HOLDOUT_IMAGES
    assert sum(row.correct for row in result.report.per_class) == HOLDOUT_CORRECT
    assert not result.degraded
    assert result_description(result).startswith(f"ok: accuracy {HOLDOUT_CORRECT / HOLDOUT_IMAGES:.4f}")


def test_below_the_threshold_is_degraded_and_the_event_says_so(endpoint, holdout_dir):
    result = monitor_endpoint(endpoint, holdout_dir, "tiny", threshold=0.9)

    assert result.degraded
    assert degraded_payload(result) == {
        "model_name": "tiny",
        "metric": "accuracy",
        "score": HOLDOUT_CORRECT / HOLDOUT_IMAGES,
        "threshold": 0.9,
        "data_dir": str(holdout_dir.resolve()),
        "endpoint": endpoint,
        "images": HOLDOUT_IMAGES,
    }
    assert model_resource("tiny")[RESOURCE_ID] == f"{MODEL_RESOURCE_PREFIX}tiny"
    assert MODEL_DEGRADED == "fpgaflow.model.degraded"


def test_threshold_defaults_to_the_setting(endpoint, holdout_dir):
    result = monitor_endpoint(
        endpoint, holdout_dir, "tiny", settings=PipelineSettings(monitor_min_accuracy=1.0, monitor_batch_size=3)
    )

    assert result.threshold == 1.0 and result.degraded
    assert result.report.correct == HOLDOUT_CORRECT


def test_every_image_scored_right_is_accuracy_one(endpoint, tiny_service_dir, tmp_path):
    folder = write_labelled_folder(tmp_path / "all-right", tiny_service_dir, correct=HOLDOUT_IMAGES)

    assert monitor_endpoint(endpoint, folder, "tiny", threshold=1.0).report.accuracy == 1.0


def test_holdout_classes_the_model_does_not_know_are_named(endpoint, tmp_path, holdout_dir):
    (tmp_path / "zebra").mkdir()
    (tmp_path / "zebra" / "1.jpg").write_bytes(next(holdout_dir.rglob("*.jpg")).read_bytes())

    with pytest.raises(PipelineStepError, match=r"none of the holdout classes \['zebra'\].*cat, dog, fox"):
        monitor_endpoint(endpoint, tmp_path, "tiny")


def test_bad_arguments_are_clear_errors(endpoint, holdout_dir, tmp_path):
    with pytest.raises(PipelineStepError, match="HOST:PORT"):
        monitor_endpoint("localhost", holdout_dir, "tiny")
    with pytest.raises(PipelineStepError, match="between 0 and 1"):
        monitor_endpoint(endpoint, holdout_dir, "tiny", threshold=80)
    with pytest.raises(PipelineStepError, match="no decodable images"):
        monitor_endpoint(endpoint, tmp_path, "tiny")
    result = monitor_endpoint(endpoint, holdout_dir, "", threshold=1.0)
    with pytest.raises(PipelineStepError, match="must be named"):
        emit_model_degraded(result)


def test_parse_endpoint():
    assert parse_endpoint("gateway.local:8500") == ("gateway.local", 8500)
    assert parse_endpoint("[::1]:9000") == ("::1", 9000)
    for bad in ("8500", ":8500", "host:", "host:port", "host:70000"):
        with pytest.raises(PipelineStepError):
            parse_endpoint(bad)
