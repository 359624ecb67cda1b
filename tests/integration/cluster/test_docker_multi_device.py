"""The docker target's one-container-per-node layout hosting a node that chains its model over several devices."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.fpga_runtime.cluster.launcher import NodeSpec
from fpgaflow.fpga_runtime.cluster.launchers.docker import DockerLauncher
from fpgaflow.fpga_runtime.errors import FpgaflowError
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.docker_engine import serving_image
from tests.fixtures.split_service import small_device_profile, write_residual_service
from tests.fixtures.tiny_service import encoded_images, reference_probabilities

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TAG = "fpgaflow-test/multi-device-deep:1"


@pytest.fixture(scope="module")
def served_image(docker_client, local_base_image, tmp_path_factory):
    home = tmp_path_factory.mktemp("docker-multi-home")
    service_dir = write_residual_service(home / "service", name="deep", version="1")
    with serving_image(docker_client, service_dir, TAG, local_base_image, home) as tag:
        yield service_dir, tag


def test_a_container_asked_for_two_devices_serves_the_model_they_hold_together(docker_client, served_image, tmp_path):
    service_dir, image = served_image
    profile = small_device_profile(tmp_path / "profiles")
    launcher = DockerLauncher(f"multi-{uuid.uuid4().hex[:6]}", PipelineSettings(home=tmp_path / "home"), tmp_path)

    def node(devices: int) -> NodeSpec:
        return NodeSpec(
            node_id=f"node-{devices}",
            model="deep",
            version="1",
            service_dir=str(service_dir),
            image=image,
            device_profile=str(profile),
            devices=devices,
        )

    try:
        started = launcher.start(node(2))
        logs = docker_client.containers.get(started.container).logs().decode()
        assert "serving deep v1 in fp32 over 2 × small-fpga, modelled device latency " in logs
        host, _, port = started.address.rpartition(":")
        images = encoded_images(2)
        with PredictionClient(host, int(port)) as client:
            np.testing.assert_allclose(
                client.score_images(images), reference_probabilities(service_dir, images), rtol=1e-5, atol=1e-6
            )
        with pytest.raises(FpgaflowError, match=r"needs 2 small-fpga devices in fp32 .* --devices 2 or more"):
            launcher.start(node(1))
    finally:
        launcher.close()
