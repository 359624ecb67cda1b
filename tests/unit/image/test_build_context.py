"""The build context and the no-engine path: a real wheel and wheelhouse, an engine address that answers nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fpgaflow.flows.cli import main as cli_main
from fpgaflow.fpga_runtime.errors import InvalidServiceDefinition
from fpgaflow.tasks.packaging.image_build import BuildSteps, ImageBuildFailed, build_image, write_build_context
from fpgaflow.tasks.packaging.steps import build_image_task
from fpgaflow.tasks.settings import get_pipeline_settings
from tests.fixtures.settings import reload_settings
from tests.unit.image.conftest import MISSING_ENGINE

RUNTIME_PACKAGES = (
    "numpy",
    "onnx",
    "onnxruntime",
    "grpcio",
    "grpcio_health_checking",
    "protobuf",
    "pillow",
    "pydantic",
    "pydantic_settings",
    "prometheus_client",
    "pyyaml",
)
PIPELINE_PACKAGES = ("tensorflow", "prefect", "mlflow", "great_expectations", "pandas", "docker", "keras")


def relative_files(directory: Path) -> set[str]:
    return {str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file()}


def distribution(wheel_name: str) -> str:
    return wheel_name.split("-")[0].lower()


def test_context_holds_only_the_service_the_fpgaflow_wheel_the_wheelhouse_and_the_dockerfile(
    service_dir, tmp_path, no_engine_settings
):
    (tmp_path / "credentials.json").write_text('{"token": "secret"}')  # beside the service: must stay out
    context = tmp_path / "out" / "context"
    write_build_context(service_dir, context, "python:3.11-slim", no_engine_settings)

    files = relative_files(context)
    service_files = {f"service/{name}" for name in relative_files(service_dir)}
    assert service_files == {"service/service.json", "service/featurizer.onnx", "service/head.onnx"}
    runtime = {name for name in files if name.startswith("runtime/")}
    wheels = {name for name in files if name.startswith("wheels/")}
    assert files == {"Dockerfile"} | service_files | runtime | wheels
    assert len(runtime) == 1 and runtime.pop().startswith("runtime/fpgaflow-")
    assert all(name.endswith(".whl") for name in wheels)
    for name in service_files:
        assert (context / name).read_bytes() == (service_dir / name.removeprefix("service/")).read_bytes()

    distributions = {distribution(Path(name).name) for name in wheels}
    assert set(RUNTIME_PACKAGES) <= distributions
    assert not distributions & set(PIPELINE_PACKAGES)
    assert all("cp311" in name or "none-any" in name or "abi3" in name for name in wheels)
    assert "FROM python:3.11-slim AS install" in (context / "Dockerfile").read_text()


def test_a_symlink_in_the_service_directory_is_refused(service_dir, tmp_path, no_engine_settings):
    (tmp_path / "secret").write_text("do not ship")
    (service_dir / "extra").symlink_to(tmp_path / "secret")
    with pytest.raises(ImageBuildFailed, match="symlink"):
        write_build_context(service_dir, tmp_path / "context", "python:3.11-slim", no_engine_settings)


def test_a_context_inside_the_service_directory_is_refused(service_dir, no_engine_settings):
    with pytest.raises(ImageBuildFailed, match="inside the service directory"):
        write_build_context(service_dir, service_dir / "context", "python:3.11-slim", no_engine_settings)


def test_a_directory_without_service_json_is_refused_before_anything_is_written(tmp_path, no_engine_settings):
    with pytest.raises(InvalidServiceDefinition, match="service.json is missing"):
        build_image(tmp_path, output_dir=tmp_path / "out", settings=no_engine_settings)
    assert not (tmp_path / "out" / "context").exists()


def test_without_an_engine_the_context_is_written_and_the_result_says_why_no_image(service_dir, tmp_path, no_engine_settings):
    lines = []
    result = build_image(
        service_dir, base_image="python:3.11-slim", output_dir=tmp_path / "out", settings=no_engine_settings, on_line=lines.append
    )
    assert result.built is False and result.image is None and result.image_id is None
    assert "image not built" in result.reason and MISSING_ENGINE in result.reason
    assert result.tag == "fpgaflow/tiny:1"
    assert (Path(result.context_dir) / "Dockerfile").is_file()
    assert result.reason in Path(result.log_path).read_text()
    assert lines == [result.reason]
    saved = json.loads((tmp_path / "out" / "image.json").read_text())
    assert saved["built"] is False and saved["reason"] == result.reason
    assert result.summary()["image"] is None and result.summary()["reason"] == result.reason


def test_the_task_body_defaults_its_base_image_and_output_dir_from_settings(service_dir, image_home, monkeypatch):
    monkeypatch.setenv("FPGAFLOW_HOME", str(image_home))
    monkeypatch.setenv("FPGAFLOW_DOCKER_HOST", MISSING_ENGINE)
    reload_settings()
    result = build_image_task.fn(service_dir)
    assert result.base_image == get_pipeline_settings().image_base == "python:3.11-slim"
    assert Path(result.context_dir) == image_home / "images" / "tiny-1" / "context"
    assert result.built is False


def test_cli_reports_the_reason_and_exits_non_zero_without_an_engine(service_dir, image_home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FPGAFLOW_HOME", str(image_home))
    monkeypatch.setenv("FPGAFLOW_DOCKER_HOST", MISSING_ENGINE)
    reload_settings()
    code = cli_main(
        ["image", "build", str(service_dir), "--tag", "example/tiny:test", "--json", "--output-dir", str(tmp_path / "out")]
    )
    captured = capsys.readouterr()
    assert code == 1
    summary = json.loads(captured.out)
    assert summary["image"] is None and summary["tag"] == "example/tiny:test"
    assert "no Docker engine reachable" in captured.err


def test_the_engines_dockerfile_steps_are_one_progress_line_each_and_the_rest_stays_in_the_log(capsys):
    steps = BuildSteps("fpgaflow/tiny:1")
    for line in ("Step 1/3 : FROM python:3.11-slim", " ---> 1a2b", "Step 2/3 : COPY wheels /wheels", "Step 3/3 : USER 10001"):
        steps.see(line)
    steps.close()
    said = [line.split(", elapsed")[0] for line in capsys.readouterr().err.splitlines()]
    assert said == [
        "image build fpgaflow/tiny:1 1/3 steps: FROM python:3.11-slim",
        "image build fpgaflow/tiny:1 2/3 steps: COPY wheels /wheels",
        "image build fpgaflow/tiny:1 3/3 steps: USER 10001",
    ]
