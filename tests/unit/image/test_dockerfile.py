"""The generated Dockerfile, labels and tag: pure functions, no engine."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from fpgaflow.fpga_runtime.service import load_service
from fpgaflow.tasks.packaging.image_build import (
    ENTRYPOINT,
    LABEL_PREFIX,
    RUNTIME_UID,
    SERVE_COMMAND,
    SERVICE_PATH,
    VENV,
    default_tag,
    image_labels,
    render_dockerfile,
    source_label,
)
from tests.fixtures.lineage_service import LINEAGE

# Docker's reference grammar: lowercase path components, tag of word characters, dots, dashes.
REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
REQUIREMENTS = ["grpcio==1.85.1", "numpy<3,>=2.0", "onnxruntime==1.31.1"]


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    result = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, arguments = line.strip().partition(" ")
            result.append((keyword.upper(), arguments.strip()))
    return result


@pytest.fixture
def dockerfile(service_dir) -> str:
    service = load_service(service_dir)
    return render_dockerfile(
        "fpgaflow/python-base:bookworm",
        "fpgaflow-0.1.0-py3-none-any.whl",
        REQUIREMENTS,
        image_labels(service, "fpgaflow/python-base:bookworm"),
        8500,
    )


@pytest.mark.parametrize("name, version", [("tiny", "1"), ("Cats.And_Dogs-", "7"), ("m", "-rc.1"), ("A1", "2024+local")])
def test_default_tag_is_a_valid_docker_reference(service_dir, name, version):
    service = load_service(service_dir).model_copy(update={"name": name, "version": version})
    repository, tag = default_tag(service).rsplit(":", 1)
    assert REPOSITORY.match(repository), repository
    assert TAG.match(tag), tag
    assert repository.startswith("fpgaflow/")


def test_labels_carry_model_identity_numeric_format_and_every_lineage_entry(service_dir):
    labels = image_labels(load_service(service_dir), "python:3.11-slim")
    assert labels[f"{LABEL_PREFIX}model.name"] == "tiny"
    assert labels[f"{LABEL_PREFIX}model.version"] == "1"
    assert labels[f"{LABEL_PREFIX}numeric-format"] == "fp32"
    assert labels["org.opencontainers.image.base.name"] == "python:3.11-slim"
    assert labels[f"{LABEL_PREFIX}source.mlflow-run-id"] == LINEAGE["mlflow_run_id"]
    assert labels[f"{LABEL_PREFIX}source.dataset-fingerprint"] == LINEAGE["dataset_fingerprint"]
    assert labels[f"{LABEL_PREFIX}source.note"] == LINEAGE["note"]


def test_source_label_names_use_docker_label_characters():
    assert source_label("MLflow Run/ID") == f"{LABEL_PREFIX}source.mlflow-run-id"
    assert re.fullmatch(r"[a-z0-9.-]+", source_label("dataset_fingerprint"))


def test_both_stages_start_from_the_given_base_and_install_into_a_venv_from_the_wheelhouse_only(dockerfile):
    steps = instructions(dockerfile)
    froms = [arguments for keyword, arguments in steps if keyword == "FROM"]
    assert froms == ["fpgaflow/python-base:bookworm AS install", "fpgaflow/python-base:bookworm"]
    requirements, runtime = [arguments for keyword, arguments in steps if keyword == "RUN" and "pip install" in arguments]
    assert requirements.startswith(f"python3 -m venv {VENV} ")
    assert shlex.split(requirements)[-len(REQUIREMENTS) :] == REQUIREMENTS
    assert runtime.endswith("/build/runtime/fpgaflow-0.1.0-py3-none-any.whl")
    for install in (requirements, runtime):
        assert f"{VENV}/bin/pip install --no-index" in install and "--find-links /build/wheels" in install
    # The requirements layer comes before the fpgaflow wheel is copied in: source changes keep it cached.
    assert (
        steps.index(("COPY", "wheels /build/wheels"))
        < steps.index(("RUN", requirements))
        < steps.index(("COPY", "runtime /build/runtime"))
    )
    assert ("COPY", f"--from=install {VENV} {VENV}") in steps
    assert ("COPY", f"service {SERVICE_PATH}") in steps


def test_the_image_runs_as_a_non_root_user(dockerfile):
    steps = instructions(dockerfile)
    users = [arguments for keyword, arguments in steps if keyword == "USER"]
    assert users == [f"{RUNTIME_UID}:{RUNTIME_UID}"]
    assert RUNTIME_UID != 0
    last_run = max(index for index, (keyword, _) in enumerate(steps) if keyword == "RUN")
    assert last_run < next(index for index, (keyword, _) in enumerate(steps) if keyword == "USER")


def test_entrypoint_serves_the_service_and_cmd_is_overridable(dockerfile):
    steps = dict(instructions(dockerfile))
    assert json.loads(steps["ENTRYPOINT"]) == ENTRYPOINT == [f"{VENV}/bin/python", "-m", "fpgaflow.fpga_runtime"]
    assert json.loads(steps["CMD"]) == SERVE_COMMAND == [SERVICE_PATH]
    assert "FPGAFLOW_SERVER_HOST=0.0.0.0" in steps["ENV"] and "FPGAFLOW_SERVER_PORT=8500" in steps["ENV"]
    assert steps["EXPOSE"] == "8500"


def test_healthcheck_asks_grpc_health_for_serving(dockerfile):
    healthcheck = dict(instructions(dockerfile))["HEALTHCHECK"]
    options, _, command = healthcheck.partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options
    python, flag, code = json.loads(command)
    assert (python, flag) == (f"{VENV}/bin/python", "-c")
    compile(code, "healthcheck", "exec")
    assert "HealthStub" in code and "SERVING" in code and "server_port" in code


def test_label_values_are_written_literally_without_variable_expansion(dockerfile):
    label_line = dict(instructions(dockerfile))["LABEL"]
    assert '"fpgaflow.source.note"="a \\"quoted\\" \\$HOME \\\\ value"' in label_line
