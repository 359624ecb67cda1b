"""`fpgaflow serve` on one node for a featurizer larger than one device: the split chained over several devices.

The service's FPGA stage needs two devices of a small custom profile; the node prints what it serves
on and answers both the TF Serving and the KServe v2 APIs as the unsplit graphs do.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fpgaflow.fpga_runtime.client import PredictionClient
from tests.fixtures.split_service import small_device_profile, write_residual_service
from tests.fixtures.tiny_service import encoded_images, reference_probabilities
from tests.fixtures.wire import kserve_probabilities
from tests.integration.runtime.test_serve_cli import EXIT_TIMEOUT, Node

TIMEOUT = 30


def serve_command(service_dir: Path, device: str | Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fpgaflow.flows", "serve", str(service_dir), "--port", "0", "--device", str(device), *extra]


def score_both_ways(node: Node, model: str, images: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities from the TF Serving API (the fpgaflow client) and from KServe v2 ModelInfer."""
    with PredictionClient(node.host, node.port, service_name=model, timeout=TIMEOUT) as client:
        tf_serving = client.score_images(images)
    return np.asarray(tf_serving), kserve_probabilities(node.address, model, images, TIMEOUT)


@pytest.fixture(scope="module")
def split_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    return write_residual_service(root / "deep", name="deep", version="3"), small_device_profile(root)


def test_serve_chains_the_devices_the_model_needs_and_says_so(split_setup):
    service_dir, profile = split_setup
    images = encoded_images(3)
    node = Node(serve_command(service_dir, profile))
    try:
        serving = node._wait_for("serving ")
        assert serving.startswith("serving deep v3 in fp32 over 2 × small-fpga, modelled device latency ")
        assert serving.endswith(" ms per image") and float(serving.split()[-4]) > 0
        tf_serving, kserve = score_both_ways(node, "deep", images)
        expected = reference_probabilities(service_dir, images)
        np.testing.assert_allclose(tf_serving, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(kserve, expected, rtol=1e-5, atol=1e-6)
        code, stderr = node.terminate()
        assert code == 0, stderr
    finally:
        node.kill()


def test_a_devices_cap_below_the_need_fails_with_the_count_and_the_ways_out(split_setup):
    service_dir, profile = split_setup
    finished = subprocess.run(
        serve_command(service_dir, profile, "--devices", "1"), capture_output=True, text=True, timeout=EXIT_TIMEOUT
    )
    assert finished.returncode == 2 and "Traceback" not in finished.stderr
    assert "needs 2 small-fpga devices in fp32" in finished.stderr
    assert "--devices 2 or more" in finished.stderr and "narrower numeric format (int8 needs 1 device" in finished.stderr


def test_devices_must_be_a_positive_count(split_setup):
    service_dir, profile = split_setup
    finished = subprocess.run(
        serve_command(service_dir, profile, "--devices", "0"), capture_output=True, text=True, timeout=EXIT_TIMEOUT
    )
    assert finished.returncode == 2 and "--devices: must be a whole number of at least 1" in finished.stderr
