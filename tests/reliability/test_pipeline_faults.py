"""Pipeline steps under faults: a full disk mid-write, MLflow down, no Docker engine.

Each fails loudly with a message naming the problem, and leaves nothing half-made behind: no
partial service directory, no torn file; a re-run after the fault completes.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fpga_runtime.preprocessing import PreprocessSpec
from fpga_runtime.service import load_service
from fpga_runtime.settings import Settings
from tasks import files, packaging
from tasks.config import PipelineConfig
from tasks.image_build import build_image
from tasks.packaging import package_service
from tasks.sample_data import write_sample_data
from tasks.tracking import TrackingUnavailable, start_pipeline_run
from tests.fixtures.tiny_service import CLASS_NAMES, INPUT_SIZE, write_tiny_service


REPO = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.startswith("."))


@pytest.fixture
def stages(tmp_path) -> Path:
    return write_tiny_service(tmp_path / "stages")


def package(stages: Path, destination: Path, format_name: str = "fp32") -> Path:
    return package_service(
        name="tiny",
        version="1",
        class_names=CLASS_NAMES,
        preprocessing=PreprocessSpec.for_input_size(INPUT_SIZE),
        numeric_format=format_name,
        fpga_onnx=stages / "featurizer.onnx",
        cpu_onnx=stages / "head.onnx",
        source={"run_id": "r1"},
        destination=destination,
    )


def test_a_full_disk_mid_packaging_leaves_no_service_directory_and_a_rerun_completes(stages, tmp_path, monkeypatch):
    destination = tmp_path / "services" / "tiny" / "1"
    with monkeypatch.context() as patch:
        patch.setattr(packaging, "load_service", disk_full)  # after every file of the new directory is written
        with pytest.raises(OSError) as raised:
            package(stages, destination)
    assert raised.value.errno == errno.ENOSPC
    assert not destination.exists() and leftovers(destination.parent) == []

    assert load_service(package(stages, destination)).name == "tiny"


def test_a_failed_repackaging_keeps_the_previous_service_directory_whole(stages, tmp_path, monkeypatch):
    destination = package(stages, tmp_path / "services" / "tiny" / "1")
    before = {path.name: path.read_bytes() for path in destination.iterdir()}
    with monkeypatch.context() as patch:
        patch.setattr(packaging, "load_service", disk_full)
        with pytest.raises(OSError):
            package(stages, destination, format_name="int8")
    assert {path.name: path.read_bytes() for path in destination.iterdir()} == before
    assert load_service(destination).stages[0].numeric_format == "fp32"
    assert leftovers(destination.parent) == []


class _FullDiskHandle:
    def __init__(self, handle):
        self._handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._handle.close()

    def write(self, text):
        self._handle.write(text[: len(text) // 2])
        disk_full()


def test_a_full_disk_mid_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = files.write_text_atomic(tmp_path / "summary.json", '{"version": 1}')
    real_fdopen = os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda descriptor, mode: _FullDiskHandle(real_fdopen(descriptor, mode)))
    with pytest.raises(OSError) as raised:
        files.write_text_atomic(target, '{"version": 2, "much": "more text"}')
    assert raised.value.errno == errno.ENOSPC
    assert target.read_text() == '{"version": 1}'
    assert [path.name for path in tmp_path.iterdir()] == ["summary.json"]


def test_mlflow_down_fails_the_tracking_step_naming_the_server(tmp_path):
    uri = f"http://127.0.0.1:{closed_port()}"
    settings = Settings(home=tmp_path / "home", mlflow_tracking_uri=uri, mlflow_http_retries=0)
    with pytest.raises(TrackingUnavailable) as raised:
        start_pipeline_run(PipelineConfig(data_dir=tmp_path), "fingerprint", settings)
    assert str(raised.value).startswith(f"the MLflow tracking server at {uri} did not answer: [Errno 111] Connection refused")


@pytest.mark.slow
def test_fpgaflow_run_with_mlflow_down_ends_with_one_line_naming_the_server(tmp_path):
    data_dir = tmp_path / "digits"
    write_sample_data(data_dir, size=32, per_class=10)
    uri = f"http://127.0.0.1:{closed_port()}"
    environment = {**os.environ, "FPGAFLOW_HOME": str(tmp_path / "home"), "FPGAFLOW_MLFLOW_TRACKING_URI": uri,
                   "FPGAFLOW_MLFLOW_HTTP_RETRIES": "0"}
    environment.pop("PREFECT_HOME", None)
    environment.pop("PREFECT_API_URL", None)
    done = subprocess.run([sys.executable, "-m", "flows", "run", str(data_dir), "--until", "train", "--input-size", "32"],
                          cwd=REPO, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        f"fpgaflow run: the MLflow tracking server at {uri} did not answer: [Errno 111] Connection refused "
        "(start it, or point FPGAFLOW_MLFLOW_TRACKING_URI at a running one)"
    ]


def test_an_unreachable_docker_engine_is_reported_with_its_address_and_no_image(tmp_path, image_home):
    service_dir = write_tiny_service(tmp_path / "service")
    address = f"tcp://127.0.0.1:{closed_port()}"
    settings = Settings(home=image_home, docker_host=address, docker_timeout=5)
    result = build_image(service_dir, base_image="python:3.11-slim", output_dir=tmp_path / "image", settings=settings)
    assert not result.built and address in result.reason
    assert (tmp_path / "image" / "context" / "service" / "service.json").is_file()
