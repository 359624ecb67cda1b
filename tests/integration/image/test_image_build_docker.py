"""A real serving image on a real engine: built on the local base image, run as a container, scored over gRPC."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.tasks.packaging.image_build import LABEL_PREFIX, RUNTIME_UID, ImageBuildFailed, build_image
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.lineage_service import LINEAGE, write_service_with_lineage
from tests.fixtures.tiny_service import encoded_images, reference_probabilities

pytestmark = [pytest.mark.docker, pytest.mark.slow]

HEALTHY_WITHIN_SECONDS = 90


def wait_until_healthy(container) -> str:
    """Poll the engine's view of the image's HEALTHCHECK until healthy, exited, or the deadline."""
    deadline = time.monotonic() + HEALTHY_WITHIN_SECONDS
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            return "exited"
        health = container.attrs["State"].get("Health", {}).get("Status")
        if health in ("healthy", "unhealthy"):
            return health
        time.sleep(0.5)
    return "timeout"


@pytest.fixture
def built_image(docker_client, local_base_image, image_home):
    home = image_home
    service_dir = write_service_with_lineage(home / "service-tiny-docker", name="tiny-docker", version="3")
    lines = []
    result = build_image(
        service_dir,
        base_image=local_base_image,
        tag="fpgaflow-test/tiny-docker:3",
        settings=PipelineSettings(home=home),
        on_line=lines.append,
    )
    yield result, service_dir, lines
    docker_client.images.remove(result.tag, force=True)


def test_the_image_is_built_labelled_non_root_and_serves_the_model(docker_client, built_image):
    result, service_dir, lines = built_image
    assert result.built and result.image == "fpgaflow-test/tiny-docker:3"
    assert result.image_id.startswith("sha256:") and result.size_bytes > 100_000_000
    assert any("Successfully tagged" in line for line in lines)
    assert Path(result.log_path).read_text().count("\n") >= len(lines)

    labels = docker_client.images.get(result.tag).labels
    assert labels[f"{LABEL_PREFIX}model.name"] == "tiny-docker"
    assert labels[f"{LABEL_PREFIX}model.version"] == "3"
    assert labels[f"{LABEL_PREFIX}numeric-format"] == "fp32"
    assert labels[f"{LABEL_PREFIX}source.mlflow-run-id"] == LINEAGE["mlflow_run_id"]
    assert labels[f"{LABEL_PREFIX}source.dataset-fingerprint"] == LINEAGE["dataset_fingerprint"]
    assert labels[f"{LABEL_PREFIX}source.note"] == LINEAGE["note"]
    assert result.user == f"{RUNTIME_UID}:{RUNTIME_UID}"

    container = docker_client.containers.run(result.tag, detach=True, ports={"8500/tcp": ("127.0.0.1", None)})
    try:
        assert wait_until_healthy(container) == "healthy", container.logs().decode()[-3000:]
        assert container.exec_run(["id", "-u"]).output.decode().strip() == str(RUNTIME_UID)
        host_port = int(container.ports["8500/tcp"][0]["HostPort"])
        images = encoded_images(3)
        with PredictionClient("127.0.0.1", host_port, timeout=30, retries=0) as client:
            probabilities = client.score_images(images)
        np.testing.assert_allclose(probabilities, reference_probabilities(service_dir, images), rtol=1e-5, atol=1e-6)
    finally:
        container.remove(force=True)


def test_a_failed_build_fails_the_step_with_the_engines_error(docker_client, tmp_path):
    service_dir = write_service_with_lineage(tmp_path / "service")
    with pytest.raises(ImageBuildFailed, match="fpgaflow-test/no-such-base:0") as failure:
        build_image(
            service_dir,
            base_image="fpgaflow-test/no-such-base:0",
            tag="fpgaflow-test/never:1",
            settings=PipelineSettings(home=tmp_path / "home"),
        )
    assert "scripts/base-image" in str(failure.value)
    assert "ERROR" in (tmp_path / "home" / "images" / "tiny-1" / "build.log").read_text()


def test_without_a_base_image_an_unpullable_default_gives_way_to_the_local_base_image(
    docker_client, local_base_image, image_home, tmp_path
):
    service_dir = write_service_with_lineage(tmp_path / "service")
    settings = PipelineSettings(home=image_home, image_base="fpgaflow-test/no-such-base:0", local_base_image=local_base_image)
    lines = []
    result = build_image(service_dir, tag="fpgaflow-test/fallback:1", settings=settings, on_line=lines.append)
    try:
        assert result.built and result.base_image == local_base_image
        assert docker_client.images.get(result.tag).labels["org.opencontainers.image.base.name"] == local_base_image
        assert any("fpgaflow-test/no-such-base:0 could not be pulled" in line for line in lines)
    finally:
        docker_client.images.remove(result.tag, force=True)
