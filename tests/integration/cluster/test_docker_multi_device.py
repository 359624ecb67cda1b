"""The docker target's one-container-per-node layout hosting nodes that run their model or segment over several devices:
a whole service chained over two, and a segment whose layer is larger than a device cut over three in one container."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.fpga_runtime.cluster.launcher import NodeSpec
from fpgaflow.fpga_runtime.cluster.launchers.docker import DockerLauncher
from fpgaflow.fpga_runtime.errors import FpgaflowError
from fpgaflow.tasks.deployment.deploy import deploy
from fpgaflow.tasks.deployment.split import split_service
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.docker_engine import serving_image
from tests.fixtures.split_service import WIDE_DEVICE_BYTES, small_device_profile, write_residual_service, write_wide_service
from tests.fixtures.tiny_service import encoded_images, reference_probabilities
from tests.integration.cluster.conftest import assert_both_apis_answer, running_cluster, status

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TAG = "fpgaflow-test/multi-device-deep:1"
WIDE_TAG = "fpgaflow-test/multi-device-wide:1"


@pytest.fixture(scope="module")
def served_image(docker_client, local_base_image, image_home):
    service_dir = write_residual_service(image_home / "service", name="deep", version="1")
    with serving_image(docker_client, service_dir, TAG, local_base_image, image_home) as tag:
        yield service_dir, tag


@pytest.fixture(scope="module")
def wide_split_image(docker_client, local_base_image, image_home):
    """The wide service split for 6,000-byte devices (fc1 on one; fc2, 16,640 bytes, a part of its own) and its image."""
    source = write_wide_service(image_home / "wide")
    profile = small_device_profile(image_home / "wide-profiles", WIDE_DEVICE_BYTES)
    split = split_service(source, image_home / "wide-split", profile, PipelineSettings(home=image_home))
    with serving_image(docker_client, split.service_dir, WIDE_TAG, local_base_image, image_home) as tag:
        yield source, split.service_dir, profile, tag


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


def test_a_docker_cluster_runs_a_layer_larger_than_a_device_in_one_container_over_the_devices_it_holds(
    docker_client, wide_split_image, tmp_path
):
    source, service_dir, profile, image = wide_split_image
    images = encoded_images(3)
    with running_cluster(tmp_path / "home", nodes=4, device=str(profile), target="docker") as settings:
        result = deploy(service_dir, replicas=1, image=image, settings=settings)
        assert (result.target, result.parts, result.devices, result.nodes) == ("docker", 2, 4, [["node-1", "node-2"]])
        nodes = status(settings)["nodes"]
        assert [(node["segment"], node["host"], bool(node["container"]), node["healthy"]) for node in nodes] == [
            (1, None, True, True),
            (2, None, True, True),
            (2, "node-2", False, True),
            (2, "node-2", False, True),
        ]
        logs = docker_client.containers.get(nodes[1]["container"]).logs().decode()
        assert "serving wide v1 in fp32 over 3 × small-fpga" in logs
        assert "layer fc2 cut by output columns over 3 of them (segment 2 of 2)" in logs

        assert_both_apis_answer(settings, "wide", images, reference_probabilities(source, images))
