"""The original service's client code runs unchanged against a node: the quick start's call, verbatim
apart from the address, port and file, with the tensor names registration prints."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.fpga_runtime.server import ModelServer
from fpgaflow.fpga_runtime.service import load_service
from fpgaflow.fpga_runtime.settings import Settings
from tests.fixtures.detection_service import encoded_scenes, reference_detections, write_detection_service
from tests.fixtures.tiny_service import CLASS_NAMES, reference_probabilities

READY_TIMEOUT = 60
PRIMARY_KEY = "primary-key-of-the-service"


@pytest.fixture(scope="module")
def detection_dir(tmp_path_factory):
    return write_detection_service(tmp_path_factory.mktemp("service") / "detector", name="tiny-detector", version="1")


@pytest.fixture(scope="module")
def secured_node(service_dir, detection_dir):
    """A node holding a classifier and a detector that, like the original services, wants a key."""
    node = ModelServer("127.0.0.1:0", settings=Settings(server_api_keys=(PRIMARY_KEY,)))
    node.add_service(service_dir, "arria10")
    node.add_service(detection_dir, "arria10")
    node.start()
    node.wait_until_ready(READY_TIMEOUT)
    yield node
    node.stop(0).wait()


def _names(service_dir) -> tuple[str, str | list[str]]:
    """What registration printed for the service: ``input_tensors`` and ``output_tensors``."""
    printed = load_service(service_dir).tensor_names.client_names()
    return printed["input_tensors"], printed["output_tensors"]


def test_the_original_quick_start_call_returns_the_probabilities_of_that_output(secured_node, service_dir, images, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(images[0])
    input_tensors, output_tensors = _names(service_dir)
    address, port, use_ssl, access_token, service_name = "127.0.0.1", secured_node.port, False, PRIMARY_KEY, "tiny"

    client = PredictionClient(address, port, use_ssl, access_token, service_name)
    result = client.score_file(path=str(path), input_name=input_tensors, outputs=output_tensors)

    assert (input_tensors, output_tensors) == ("Placeholder:0", "classifier/resnet_v1_50/predictions/Softmax:0")
    assert result.shape == (len(CLASS_NAMES),)
    np.testing.assert_allclose(result, reference_probabilities(service_dir, images[:1])[0], rtol=1e-6, atol=1e-7)
    client.close()


def test_the_keyword_form_of_the_quick_start_and_a_list_of_outputs(secured_node, service_dir, images, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(images[1])
    input_tensors, output_tensors = _names(service_dir)
    with PredictionClient(
        address="127.0.0.1", port=secured_node.port, use_ssl=False, access_token=PRIMARY_KEY, service_name="tiny"
    ) as client:
        single = client.score_file(path=str(path), input_name=input_tensors, outputs=output_tensors)
        several = client.score_file(path=str(path), input_name=input_tensors, outputs=[output_tensors, "classes:0"])
    assert isinstance(several, list) and len(several) == 2
    np.testing.assert_array_equal(several[0], single)
    assert several[1] == int(single.argmax())


def test_a_detector_answers_the_list_of_its_output_tensors_with_a_list(secured_node, detection_dir, tmp_path):
    scene = encoded_scenes(1)[0]
    path = tmp_path / "street.png"
    path.write_bytes(scene)
    input_tensors, output_tensors = _names(detection_dir)
    address, port, use_ssl, access_token, service_name = "127.0.0.1", secured_node.port, False, PRIMARY_KEY, "tiny-detector"

    client = PredictionClient(address, port, use_ssl, access_token, service_name)
    result = client.score_file(path=str(path), input_name=input_tensors, outputs=output_tensors)

    assert isinstance(output_tensors, list) and len(result) == len(output_tensors) == 4
    reference = reference_detections(detection_dir, [scene])
    for array, name in zip(result, ("boxes", "scores", "classes", "num_detections"), strict=True):
        np.testing.assert_allclose(array, reference[name][0], atol=1e-6)
    client.close()
