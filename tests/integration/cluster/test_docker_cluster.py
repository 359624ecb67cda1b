"""The docker target: nodes as containers of the serving image on the cluster's private network."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaflow.fpga_runtime.cluster.daemon import cluster_client
from fpgaflow.fpga_runtime.cluster.launchers.docker import CLUSTER_LABEL, network_name
from fpgaflow.tasks.deployment.deploy import deploy
from tests.fixtures.docker_engine import serving_image
from tests.fixtures.tiny_service import encoded_images, reference_probabilities, write_tiny_service
from tests.integration.cluster.conftest import Load, eventually, gateway_client, running_cluster, status

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TAG = "fpgaflow-test/cluster-tiny:1"


@pytest.fixture(scope="module")
def served_image(docker_client, local_base_image, image_home):
    service_dir = write_tiny_service(image_home / "service-tiny", name="tiny", version="1")
    with serving_image(docker_client, service_dir, TAG, local_base_image, image_home) as tag:
        yield service_dir, tag


def cluster_leftovers(docker_client, cluster: str) -> tuple[list, list]:
    label = {"label": f"{CLUSTER_LABEL}={cluster}"}
    return docker_client.containers.list(all=True, filters=label), docker_client.networks.list(filters=label)


def test_docker_nodes_serve_survive_a_killed_container_and_are_all_removed(docker_client, served_image, tmp_path):
    service_dir, image = served_image
    images = encoded_images(3)
    with running_cluster(tmp_path / "home", nodes=2, target="docker") as settings:
        cluster = status(settings)["name"]
        result = deploy(service_dir, replicas=2, image=image, settings=settings)
        assert (result.target, result.replicas, result.image) == ("docker", 2, image)

        nodes = status(settings)["nodes"]
        assert all(node["container"] and node["pid"] is None and node["healthy"] for node in nodes)
        containers = [docker_client.containers.get(node["container"]) for node in nodes]
        assert {container.image.tags[0] for container in containers} == {image}
        assert all(network_name(cluster) in container.attrs["NetworkSettings"]["Networks"] for container in containers)
        for container in containers:
            bindings = container.attrs["NetworkSettings"]["Ports"][f"{settings.image_grpc_port}/tcp"]
            assert {binding["HostIp"] for binding in bindings} == {"127.0.0.1"}

        with gateway_client(settings) as scorer:
            np.testing.assert_allclose(
                scorer.score_images(images), reference_probabilities(service_dir, images), rtol=1e-5, atol=1e-6
            )

        with Load(settings, "tiny") as load:
            load.wait_for(10)
            containers[0].kill()
            load.wait_for(20)
            eventually(
                lambda: (
                    all(n["healthy"] and n["container"] for n in status(settings)["nodes"])
                    and status(settings)["nodes"][0]["container"] != nodes[0]["container"]
                ),
                what="the node container replaced",
            )
            load.wait_for(5)
        assert load.failures == []
        with gateway_client(settings) as scorer:
            assert scorer.score_images(images).shape == (3, 3)
        with cluster_client(settings) as client:
            client.undeploy("tiny")
    assert cluster_leftovers(docker_client, cluster) == ([], [])
