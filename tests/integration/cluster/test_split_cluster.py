"""A model too large for one device: split across nodes, chained node to node, answering as the unsplit model; a layer
larger than one device cut by output columns over the devices one node holds."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.fpga_runtime.cluster.daemon import cluster_client
from fpgaflow.fpga_runtime.errors import UpstreamError
from fpgaflow.fpga_runtime.server import create_server
from fpgaflow.tasks.deployment.deploy import deploy
from tests.fixtures.split_service import WIDE_DEVICE_BYTES, small_device_profile, write_residual_service, write_wide_service
from tests.fixtures.tiny_service import encoded_images, reference_probabilities
from tests.integration.cluster.conftest import Load, assert_both_apis_answer, eventually, gateway_client, running_cluster, status

pytestmark = pytest.mark.slow


def unsplit_probabilities(service_dir, images) -> np.ndarray:
    """The same model on one node whose device is large enough to hold it whole."""
    node, port = create_server(service_dir, "127.0.0.1:0", device_profile="arria10")
    node.start()
    try:
        node.wait_until_ready(60)
        with PredictionClient("127.0.0.1", port, retries=0) as client:
            return client.score_images(images)
    finally:
        node.stop(0).wait()


def test_a_model_split_across_two_devices_answers_as_the_unsplit_one_and_survives_a_node_kill(tmp_path):
    service_dir = write_residual_service(tmp_path / "deep")
    profile = small_device_profile(tmp_path / "profiles")
    images = encoded_images(4)
    with running_cluster(tmp_path / "home", nodes=2, device=str(profile)) as settings:
        with cluster_client(settings) as client, pytest.raises(UpstreamError, match="does not fit one small-fpga device"):
            client.deploy(str(service_dir), 1)

        result = deploy(service_dir, replicas=1, settings=settings)
        assert result.parts == 2 and result.nodes == [["node-1", "node-2"]]
        nodes = status(settings)["nodes"]
        assert [(node["segment"], node["healthy"]) for node in nodes] == [(1, True), (2, True)]

        with gateway_client(settings) as scorer:
            split = scorer.score_images(images)
        np.testing.assert_allclose(split, unsplit_probabilities(service_dir, images), rtol=0, atol=1e-6)

        with Load(settings, "deep") as load:
            load.wait_for(5)
            os.kill(nodes[1]["pid"], signal.SIGKILL)
            restarted = eventually(
                lambda: all(n["healthy"] and n["pid"] not in (None, nodes[1]["pid"]) for n in status(settings)["nodes"]),
                what="the chain restarted",
            )
            load.wait_for(5)
        assert restarted and load.failures == []  # requests waited for the chain to come back
        after = status(settings)["nodes"]
        assert after[1]["restarts"] == 1 and after[0]["pid"] != nodes[0]["pid"]  # the chain restarts whole
        with gateway_client(settings) as scorer:
            np.testing.assert_allclose(scorer.score_images(images), split, rtol=0, atol=1e-6)


def test_a_layer_larger_than_a_device_runs_over_the_devices_its_node_holds_and_answers_both_apis(tmp_path, capsys):
    # fc2 of the wide featurizer (16,640 bytes) exceeds a 6,000-byte device: segment 1 (fc1) takes one device,
    # segment 2 (fc2) one node process over three devices, its column slices side by side.
    service_dir = write_wide_service(tmp_path / "wide")
    profile = small_device_profile(tmp_path / "profiles", WIDE_DEVICE_BYTES)
    images = encoded_images(3)
    with running_cluster(tmp_path / "home", nodes=4, device=str(profile)) as settings:
        result = deploy(service_dir, replicas=1, settings=settings)
        assert (result.parts, result.devices, result.nodes) == (2, 4, [["node-1", "node-2"]])
        assert result.summary()["devices_per_replica"] == 4
        said = [line.split(", elapsed")[0] for line in capsys.readouterr().err.splitlines() if line.startswith("deploy ")]
        assert said == [
            "deploy wide v1 1/2 steps: 4 x small-fpga per replica",
            f"deploy wide v1 2/2 steps: 1 replica(s) serving at {result.endpoint}",
        ]
        nodes = status(settings)["nodes"]
        assert [(node["segment"], node["host"], node["healthy"]) for node in nodes] == [
            (1, None, True),
            (2, None, True),
            (2, "node-2", True),
            (2, "node-2", True),
        ]
        assert nodes[2]["pid"] is None and status(settings)["models"][0]["devices_per_replica"] == 4
        described = Path(nodes[1]["log"]).read_text()
        assert "serving wide v1 in fp32 over 3 × small-fpga" in described
        assert "layer fc2 cut by output columns over 3 of them (segment 2 of 2)" in described

        assert_both_apis_answer(settings, "wide", images, reference_probabilities(service_dir, images))
