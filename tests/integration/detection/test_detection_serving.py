"""A detection service on a real node: TF Serving Predict, KServe ModelInfer, the client and `fpgaflow score --detect`."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from PIL import Image

from fpgaflow.fpga_runtime import codec
from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.fpga_runtime.detections import detections_from_outputs
from fpgaflow.fpga_runtime.proto import open_inference_pb2 as oip
from fpgaflow.fpga_runtime.proto import tf_serving_pb2 as tfs
from fpgaflow.fpga_runtime.protocol import DETECTION_OUTPUTS
from fpgaflow.fpga_runtime.server import create_server
from tests.fixtures.detection_service import CLASS_NAMES, encoded_scenes, reference_detections, write_detection_service
from tests.fixtures.wire import oip_call, tf_predict

READY_TIMEOUT = 60
TIMEOUT = 10


@pytest.fixture(scope="module")
def service_dir(tmp_path_factory):
    return write_detection_service(tmp_path_factory.mktemp("service") / "detector", name="detector", version="4")


@pytest.fixture(scope="module")
def server(service_dir):
    node, _port = create_server(service_dir, "127.0.0.1:0", device_profile="arria10")
    node.start()
    node.wait_until_ready(READY_TIMEOUT)
    yield node
    node.stop(0).wait()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as opened:
        yield opened


@pytest.fixture(scope="module")
def scenes():
    return encoded_scenes(3)


def assert_same_detections(outputs: dict, reference: dict) -> None:
    assert set(outputs) == set(DETECTION_OUTPUTS)
    np.testing.assert_array_equal(outputs["num_detections"], reference["num_detections"])
    np.testing.assert_array_equal(outputs["classes"], reference["classes"])
    np.testing.assert_allclose(outputs["scores"], reference["scores"], atol=1e-6)
    np.testing.assert_allclose(outputs["boxes"], reference["boxes"], atol=1e-6)


def test_tf_serving_predict_returns_the_four_detection_outputs(channel, service_dir, scenes):
    request = tfs.PredictRequest()
    request.model_spec.name = "detector"
    request.inputs["images"].CopyFrom(codec.numpy_to_tensor_proto(scenes))
    response = tf_predict(channel)(request, timeout=TIMEOUT)
    outputs = {name: codec.tensor_proto_to_numpy(tensor, name) for name, tensor in response.outputs.items()}
    assert_same_detections(outputs, reference_detections(service_dir, scenes))


def test_kserve_model_infer_returns_every_output(channel, service_dir, scenes):
    request = oip.ModelInferRequest(model_name="detector")
    request.inputs.add(name="images", datatype="BYTES", shape=[len(scenes)]).contents.bytes_contents.extend(scenes)
    response = oip_call(channel, "ModelInfer")(request, timeout=TIMEOUT)
    outputs = codec.infer_outputs_to_numpy(response)
    assert_same_detections(outputs, reference_detections(service_dir, scenes))


def test_client_detect_file_and_images(server, service_dir, scenes, tmp_path):
    path = tmp_path / "scene.png"
    path.write_bytes(scenes[1])
    reference = detections_from_outputs(reference_detections(service_dir, scenes), CLASS_NAMES)
    host, _, port = server.address.rpartition(":")
    with PredictionClient(host, int(port), service_name="detector") as client:
        single = client.detect_file(path)
        batch = client.detect_images(scenes)
    assert single.labels == reference[1].labels and set(single.labels) <= set(CLASS_NAMES)
    np.testing.assert_allclose(single.boxes, reference[1].boxes, atol=1e-6)
    assert [len(found) for found in batch] == [len(found) for found in reference]
    np.testing.assert_allclose(batch[2].scores, reference[2].scores, atol=1e-6)


def test_score_detect_draws_the_boxes_into_a_png(server, service_dir, scenes, tmp_path, capsys):
    from fpgaflow.flows.cli import main

    image, out = tmp_path / "scene.png", tmp_path / "drawn.png"
    image.write_bytes(scenes[0])
    assert main(["score", str(image), "--detect", "--address", server.address, "--out", str(out), "--min-score", "0.5"]) == 0
    printed = capsys.readouterr().out
    expected = detections_from_outputs(reference_detections(service_dir, scenes[:1]), CLASS_NAMES)[0].above(0.5)
    assert f"{len(expected)} detections (score >= 0.5), drawn to {out}" in printed
    assert sum(label in printed for label in CLASS_NAMES) >= 1 and len(expected) > 0
    drawn, original = np.asarray(Image.open(out).convert("RGB")), np.asarray(Image.open(image).convert("RGB"))
    assert drawn.shape == original.shape and (drawn != original).any()


def test_score_out_needs_detect_and_one_image(server, tmp_path, scenes, capsys):
    from fpgaflow.flows.cli import main

    image = tmp_path / "scene.png"
    image.write_bytes(scenes[0])
    assert main(["score", str(image), str(image), "--detect", "--address", server.address, "--out", str(tmp_path / "x.png")]) == 2
    assert "--out needs --detect and exactly one image" in capsys.readouterr().err


def test_smoke_test_compares_the_node_with_the_offline_stages(server, service_dir, scenes, tmp_path):
    from fpgaflow.tasks.detection.smoke import detection_smoke_test

    paths = []
    for index, data in enumerate(scenes):
        paths.append(tmp_path / f"scene{index}.png")
        paths[-1].write_bytes(data)
    result = detection_smoke_test(server.address, service_dir, paths)
    assert result.images == 3 and result.agreement == 1.0 and result.max_abs_diff <= 1e-6
    assert [row["served"] for row in result.rows] == [row["offline"] for row in result.rows]
