"""ResNet-50 and VGG-16 services on one `fpgaflow serve` node, in every numeric format, scored over both APIs.

The featurizers are the pipeline's, at 32 px (see :mod:`tests.fixtures.large_featurizers`). ResNet-50 in fp32
needs four stratix10 devices, as the issue found at 64 px (its weights do not depend on the input size); int8
and ms-fp8 fit one stratix10, so they are served on arria10 devices, of which they need five and two. VGG-16
up to fc7 is larger than ResNet-50 and needs two stratix10 devices in int8; its fc7 layer alone (4096 x 4096
fp32, 67 MB) is larger than a stratix10, so in fp32 it is cut by output columns over three devices, six in all.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from tests.fixtures.large_featurizers import convert_featurizer, reference_probabilities, write_featurizer_service
from tests.fixtures.tiny_service import encoded_images
from tests.integration.runtime.test_multi_device_serve import score_both_ways, serve_command
from tests.integration.runtime.test_serve_cli import EXIT_TIMEOUT, Node

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images():
    return encoded_images(2)


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
    return convert_featurizer("resnet50", tmp_path_factory.mktemp("resnet50"))


@pytest.fixture(scope="module")
def vgg16(tmp_path_factory):
    return convert_featurizer("vgg16", tmp_path_factory.mktemp("vgg16"))


# Largest difference from the unsplit graphs: onnxruntime fuses the QDQ pairs of an int8 graph into integer
# kernels differently on either side of a cut, so int8 parts round a little differently than the whole.
TOLERANCE = {"fp32": 1e-5, "msfp8": 1e-5, "int8": 1e-2}


def serve_and_score(service_dir, device: str, images: list[bytes], numeric_format: str) -> str:
    """Serve on one node, check both APIs answer as the whole graphs do; the node's 'serving' line."""
    node = Node(serve_command(service_dir, device))
    try:
        serving = node._wait_for("serving ")
        tf_serving, kserve = score_both_ways(node, "digits", images)
        expected = reference_probabilities(service_dir, images)
        for answer in (tf_serving, kserve):
            np.testing.assert_allclose(answer, expected, rtol=0, atol=TOLERANCE[numeric_format])
            assert list(answer.argmax(axis=1)) == list(expected.argmax(axis=1))
        code, stderr = node.terminate()
        assert code == 0, stderr
        return serving
    finally:
        node.kill()


@pytest.mark.parametrize(
    ("numeric_format", "device", "devices"),
    [("fp32", "stratix10", 4), ("int8", "arria10", 5), ("msfp8", "arria10", 2)],
)
def test_resnet50_serves_on_one_node_over_the_devices_it_needs(resnet50, images, tmp_path, numeric_format, device, devices):
    fp32_graph, features = resnet50
    service_dir = write_featurizer_service(tmp_path / "service", fp32_graph, features, numeric_format)
    serving = serve_and_score(service_dir, device, images, numeric_format)
    assert serving.startswith(f"serving digits v1 in {numeric_format} over {devices} × {device}, modelled device latency ")


def test_resnet50_fp32_under_a_cap_names_the_devices_it_needs_and_the_narrower_formats(resnet50, tmp_path):
    fp32_graph, features = resnet50
    service_dir = write_featurizer_service(tmp_path / "service", fp32_graph, features, "fp32")
    finished = subprocess.run(
        serve_command(service_dir, "stratix10", "--devices", "2"), capture_output=True, text=True, timeout=EXIT_TIMEOUT
    )
    assert finished.returncode == 2 and "Traceback" not in finished.stderr
    assert "needs 4 stratix10 devices in fp32" in finished.stderr and "--devices 4 or more" in finished.stderr
    assert "(int8 needs 1 device, msfp9 needs 1 device, msfp8 needs 1 device)" in finished.stderr


@pytest.mark.parametrize(("numeric_format", "device", "devices"), [("int8", "stratix10", 2), ("msfp8", "stratix10", 1)])
def test_vgg16_larger_than_resnet50_serves_on_one_node(vgg16, resnet50, images, tmp_path, numeric_format, device, devices):
    import onnx

    def weights(path) -> int:
        return sum(int(np.prod(tensor.dims)) for tensor in onnx.load(str(path)).graph.initializer)

    assert weights(vgg16[0]) > weights(resnet50[0])
    service_dir = write_featurizer_service(tmp_path / "service", vgg16[0], vgg16[1], numeric_format)
    serving = serve_and_score(service_dir, device, images, numeric_format)
    assert serving.startswith(f"serving digits v1 in {numeric_format} over {devices} × {device}, modelled device latency ")


def test_vgg16_fp32_cuts_fc7_by_output_columns_and_serves_on_one_node(vgg16, images, tmp_path):
    service_dir = write_featurizer_service(tmp_path / "service", vgg16[0], vgg16[1], "fp32")
    serving = serve_and_score(service_dir, "stratix10", images, "fp32")
    assert serving.startswith("serving digits v1 in fp32 over 6 × stratix10, modelled device latency ")
    assert serving.endswith("; layer vgg16_featurizer_1/fc2_1/MatMul cut by output columns over 3 of them")


def test_vgg16_fp32_under_a_cap_names_the_devices_it_needs_and_the_narrower_formats(vgg16, tmp_path):
    service_dir = write_featurizer_service(tmp_path / "service", vgg16[0], vgg16[1], "fp32")
    finished = subprocess.run(
        serve_command(service_dir, "stratix10", "--devices", "4"), capture_output=True, text=True, timeout=EXIT_TIMEOUT
    )
    assert finished.returncode == 2 and "Traceback" not in finished.stderr
    assert "needs 6 stratix10 devices in fp32" in finished.stderr and "--devices 6 or more" in finished.stderr
    assert "(int8 needs 2 devices, msfp9 needs 1 device, msfp8 needs 1 device)" in finished.stderr
