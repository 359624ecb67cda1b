"""`fpgaflow deploy imagenet/resnet50`: the original quick start's default ImageNet classifier, end to end.

The "published" files are made here: ResNet-50 with its 1,000-class top at 32 px (weights fixed, not
random) and a class index, served by a test HTTP server on 127.0.0.1 with their sha256 in a test manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fpgaflow.flows.cli import main
from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.tasks.operations.monitoring import parse_endpoint
from fpgaflow.tasks.registry.client import mlflow_client
from fpgaflow.tasks.registry.runs import TAG_WEIGHTS
from tests.fixtures.settings import reload_settings
from tests.fixtures.weights_server import class_index_file, closed_port_url, keras_weights_file, weights_server, write_manifest


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    directory = tmp_path_factory.mktemp("published")
    return {
        "resnet50_top": keras_weights_file(directory, "ResNet50", include_top=True),
        "imagenet_class_index": class_index_file(directory),
    }


@pytest.fixture
def calibration(digits_dir, tmp_path):
    folder = tmp_path / "my-photos"
    folder.mkdir()
    for path in sorted(digits_dir.glob("*/*.jpg"))[::30][:8]:
        shutil.copy(path, folder / f"{path.parent.name}-{path.name}")
    return folder


@pytest.fixture
def served(published, tmp_path, monkeypatch, pipeline_settings):
    manifest = write_manifest(tmp_path / "manifest.json", published, closed_port_url())
    with weights_server({path.name: path for path in published.values()}) as server:
        monkeypatch.setenv("FPGAFLOW_WEIGHTS_MANIFEST", str(manifest))
        monkeypatch.setenv("FPGAFLOW_WEIGHTS_URL", server.url)
        reload_settings()
        yield server


@pytest.mark.slow
def test_deploy_imagenet_resnet50_serves_the_1000_class_names(served, calibration):
    """The command in a process of its own (with its own ephemeral Prefect), as a user runs it."""
    environment = {key: value for key, value in os.environ.items() if key not in ("PREFECT_HOME", "PREFECT_API_URL")}
    arguments = ["deploy", "imagenet/resnet50", "--calibration", str(calibration), "--input-size", "32"]
    done = subprocess.run(
        [sys.executable, "-m", "fpgaflow.flows", *arguments, "--numerics", "fp32,int8", "--json"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.splitlines()[-1])
    assert "downloading resnet50_weights_tf_dim_ordering_tf_kernels.h5" in done.stderr
    assert summary["model_name"] == "imagenet-resnet50" and summary["num_classes"] == 1000
    assert summary["weights"] == "imagenet" and summary["gates_passed"]
    assert set(summary["numerics"]) == {"fp32", "int8"} and summary["numerics"]["fp32"]["accuracy"] == 1.0
    assert summary["smoke_test"]["top1_agreement"] == 1.0 and "accuracy" not in summary["smoke_test"]

    with PredictionClient(*parse_endpoint(summary["endpoint"])) as client:
        probabilities = client.score_file(next(calibration.iterdir()))
        top5 = client.top_k(probabilities, k=5)
    assert probabilities.shape == (1000,) and np.isclose(probabilities.sum(), 1.0, atol=1e-4)
    assert len(top5) == 5 and all(label.startswith("class_") for label, _ in top5)

    client = mlflow_client()
    version = client.get_model_version("imagenet-resnet50", summary["model_version"])
    assert "ImageNet weights (resnet50_weights_tf_dim_ordering_tf_kernels.h5, verified)" in version.description
    assert "1000 classes: class_0, class_1," in version.description and "and 980 more" in version.description
    assert client.get_run(summary["mlflow_run_id"]).data.tags[TAG_WEIGHTS].startswith("ImageNet weights")
    assert "no labelled ImageNet data" in version.description  # the numerics gate says what it compared


def test_deploy_imagenet_offline_fails_before_any_step_with_the_ways_out(calibration, capsys, pipeline_settings):
    code = main(["deploy", "imagenet/resnet50", "--calibration", str(calibration), "--input-size", "32"])
    error = capsys.readouterr().err
    assert code == 2
    assert "cannot download resnet50_weights_tf_dim_ordering_tf_kernels.h5" in error
    assert "FPGAFLOW_WEIGHTS_URL" in error and "fpgaflow weights import FILE" in error and "--weights none" in error
    assert not (pipeline_settings.home / "mlflow.db").exists()


def test_deploy_imagenet_needs_calibration_images(capsys):
    assert main(["deploy", "imagenet/resnet50"]) == 2
    assert "needs --calibration DIR" in capsys.readouterr().err
    assert main(["deploy", "imagenet/resnet18", "--calibration", "."]) == 2
    assert "imagenet/resnet50, imagenet/resnet152, imagenet/densenet121, imagenet/vgg16" in capsys.readouterr().err
