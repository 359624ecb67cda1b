"""The team set-up: a real MLflow tracking server started by ``mlflow/start-server``, artifacts proxied.

The pipeline's tracking, registration, publishing and promotion run against it over HTTP, and
the service definition is read back from the server's artifact store.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.fpga_runtime.service import load_service
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.keras_stages import CLASS_NAMES, INPUT_SIZE, held_out_like, save_stages

REPOSITORY = Path(__file__).resolve().parents[3]
START_SERVER = REPOSITORY / "mlflow" / "start-server"
LISTENING = re.compile(r"Uvicorn running on (http://[0-9.]+:[0-9]+)")
STARTUP_TIMEOUT_SECONDS = 240


def _forward_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    work = tmp_path_factory.mktemp("mlflow-server")
    env_file = work / "server.env"
    env_file.write_text(
        f"MLFLOW_BACKEND_STORE_URI=sqlite:///{work / 'server.db'}\n"
        f"MLFLOW_ARTIFACTS_DESTINATION={work / 'artifacts'}\n"
        "MLFLOW_HOST=127.0.0.1\nMLFLOW_PORT=0\nMLFLOW_WORKERS=1\n"
    )
    process = subprocess.Popen(
        [str(START_SERVER), str(env_file)],
        env={**os.environ, "PYTHON": sys.executable},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_forward_lines, args=(process.stderr, lines), daemon=True).start()
    seen = []
    try:
        while True:
            line = lines.get(timeout=STARTUP_TIMEOUT_SECONDS)
            if line is None:
                pytest.fail("mlflow/start-server exited before listening:\n" + "".join(seen[-20:]))
            seen.append(line)
            if match := LISTENING.search(line):
                break
        yield SimpleNamespace(url=match.group(1), artifacts=work / "artifacts")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def test_pipeline_registry_steps_against_a_tracking_server(tracking_server, tmp_path):
    from fpgaflow.tasks.config import PipelineConfig
    from fpgaflow.tasks.conversion.onnx_stages import convert_stages
    from fpgaflow.tasks.packaging.service_dir import package_service
    from fpgaflow.tasks.registry.promotion import promote
    from fpgaflow.tasks.registry.publication import pipeline_summary, publish_version
    from fpgaflow.tasks.registry.registration import register_trained_model
    from fpgaflow.tasks.registry.run_metrics import log_conversion, log_numerics
    from fpgaflow.tasks.registry.runs import finish_run, start_pipeline_run
    from fpgaflow.tasks.registry.version_state import CANDIDATE_ALIAS, CHAMPION_ALIAS
    from mlflow import MlflowClient

    settings = PipelineSettings(home=tmp_path / "home", mlflow_tracking_uri=tracking_server.url, mlflow_experiment="team")
    client = MlflowClient(tracking_uri=tracking_server.url, registry_uri=tracking_server.url)
    fpga_path, cpu_path = save_stages(tmp_path / "model", seed=5)
    config = PipelineConfig(data_dir=tmp_path / "pets", model_name="pets", input_size=INPUT_SIZE, numerics=("fp32",))

    run_id = start_pipeline_run(config, "cd" * 32, settings)
    experiment = client.get_experiment_by_name("team")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    registered = register_trained_model(run_id, "pets", fpga_path, cpu_path, CLASS_NAMES, settings)
    version = registered.version
    report = convert_stages(fpga_path, cpu_path, held_out_like(6), tmp_path / "onnx", settings)
    log_conversion(run_id, report, settings)
    outcomes = {"fp32": {"accuracy": 0.75, "delta": 0.0, "passed": True}}
    log_numerics(run_id, outcomes, settings)
    service_dir = package_service(
        name="pets",
        version=version,
        class_names=CLASS_NAMES,
        preprocessing=PreprocessSpec.for_input_size(INPUT_SIZE),
        numeric_format="fp32",
        fpga_onnx=report.fpga_onnx,
        cpu_onnx=report.cpu_onnx,
        source=registered.service_source("cd" * 32),
        settings=settings,
    )
    published = publish_version("pets", version, service_dir, report, outcomes, settings)
    finish_run(run_id, settings=settings)
    promote("pets", version, settings)

    assert published.gates_passed
    assert str(client.get_model_version_by_alias("pets", CANDIDATE_ALIAS).version) == version
    assert str(client.get_model_version_by_alias("pets", CHAMPION_ALIAS).version) == version
    stored = sorted(path.name for path in tracking_server.artifacts.rglob("service/*"))
    assert stored == ["cpu_stage.onnx", "fpga_stage.onnx", "service.json"]
    downloaded = load_service(client.download_artifacts(run_id, "service", str(tmp_path / "download")))
    assert (downloaded.name, downloaded.version) == ("pets", version)
    assert pipeline_summary(published, settings)["mlflow_tracking_uri"] == tracking_server.url
    assert not (tmp_path / "home" / "mlartifacts").exists()
