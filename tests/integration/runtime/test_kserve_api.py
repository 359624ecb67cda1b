"""KServe v2 / Open Inference Protocol GRPCInferenceService on a real node."""

import struct

import grpc
import numpy as np
import pytest

from fpgaflow.fpga_runtime import codec
from fpgaflow.fpga_runtime.preprocessing import preprocess
from fpgaflow.fpga_runtime.proto import open_inference_pb2 as oip
from fpgaflow.fpga_runtime.proto import tf_serving_pb2 as tfs
from fpgaflow.fpga_runtime.service import load_service
from tests.fixtures.tiny_service import CLASS_NAMES, INPUT_TENSORS, OUTPUT_TENSORS, reference_probabilities
from tests.fixtures.wire import oip_call, tf_predict

TIMEOUT = 10


def _images_request(images, raw: bool, outputs=(), name="tiny", version="", input_name="images"):
    request = oip.ModelInferRequest(model_name=name, model_version=version, id="request-1")
    tensor = request.inputs.add(name=input_name, datatype="BYTES", shape=[len(images)])
    if raw:
        request.raw_input_contents.append(b"".join(struct.pack("<I", len(data)) + data for data in images))
    else:
        tensor.contents.bytes_contents.extend(images)
    for output in outputs:
        request.outputs.add(name=output)
    return request


def test_server_live_ready_and_metadata(channel):
    assert oip_call(channel, "ServerLive")(oip.ServerLiveRequest(), timeout=TIMEOUT).live
    assert oip_call(channel, "ServerReady")(oip.ServerReadyRequest(), timeout=TIMEOUT).ready
    assert oip_call(channel, "ModelReady")(oip.ModelReadyRequest(name="tiny", version="7"), timeout=TIMEOUT).ready
    server = oip_call(channel, "ServerMetadata")(oip.ServerMetadataRequest(), timeout=TIMEOUT)
    assert server.name == "fpgaflow" and server.version


def test_model_metadata(channel):
    metadata = oip_call(channel, "ModelMetadata")(oip.ModelMetadataRequest(name="tiny"), timeout=TIMEOUT)
    assert metadata.name == "tiny" and list(metadata.versions) == ["7"] and metadata.platform
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("images", "BYTES", [-1]),
        ("input", "FP32", [-1, 32, 32, 3]),
    ]
    assert [(t.name, t.datatype) for t in metadata.outputs] == [
        ("probabilities", "FP32"),
        ("classes", "INT64"),
        ("class_names", "BYTES"),
    ]


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_model_infer_equals_the_onnx_stages_and_the_tf_serving_path(channel, service_dir, images, raw):
    response = oip_call(channel, "ModelInfer")(_images_request(images, raw), timeout=TIMEOUT)
    assert response.model_name == "tiny" and response.model_version == "7" and response.id == "request-1"
    assert bool(response.raw_output_contents) is raw
    outputs = codec.infer_outputs_to_numpy(response)
    assert list(outputs) == ["probabilities", "classes", "class_names"]
    expected = reference_probabilities(service_dir, images)
    np.testing.assert_allclose(outputs["probabilities"], expected, rtol=1e-6, atol=1e-7)
    assert outputs["class_names"].tolist() == [CLASS_NAMES[i].encode() for i in expected.argmax(axis=1)]

    tf_request = tfs.PredictRequest()
    tf_request.inputs["images"].CopyFrom(codec.numpy_to_tensor_proto(images))
    tf_response = tf_predict(channel)(tf_request, timeout=TIMEOUT)
    np.testing.assert_array_equal(outputs["probabilities"], codec.tensor_proto_to_numpy(tf_response.outputs["probabilities"]))


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_model_infer_by_tensor_names_returns_the_one_requested_output_under_its_name(channel, service_dir, images, raw):
    request = _images_request(images, raw, outputs=[OUTPUT_TENSORS], input_name=INPUT_TENSORS)
    outputs = codec.infer_outputs_to_numpy(oip_call(channel, "ModelInfer")(request, timeout=TIMEOUT))
    assert list(outputs) == [OUTPUT_TENSORS]
    np.testing.assert_allclose(outputs[OUTPUT_TENSORS], reference_probabilities(service_dir, images), rtol=1e-6, atol=1e-7)


def test_model_infer_preprocessed_fp32_with_requested_output(channel, service_dir, images):
    spec = load_service(service_dir).preprocessing
    batch = np.stack([preprocess(data, spec) for data in images])
    request = oip.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="input", datatype="FP32", shape=list(batch.shape))
    request.raw_input_contents.append(batch.tobytes())
    request.outputs.add(name="probabilities")
    outputs = codec.infer_outputs_to_numpy(oip_call(channel, "ModelInfer")(request, timeout=TIMEOUT))
    assert list(outputs) == ["probabilities"]
    np.testing.assert_allclose(outputs["probabilities"], reference_probabilities(service_dir, images), rtol=1e-6, atol=1e-7)


def _fp64_request():
    request = oip.ModelInferRequest(model_name="tiny")
    tensor = request.inputs.add(name="input", datatype="FP64", shape=[1, 32, 32, 3])
    tensor.contents.fp64_contents.extend([0.0] * (32 * 32 * 3))
    return request


def _wrong_shape_request():
    request = oip.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 8, 8, 3])
    request.raw_input_contents.append(np.zeros((1, 8, 8, 3), np.float32).tobytes())
    return request


@pytest.mark.parametrize(
    ("make_request", "code", "detail"),
    [
        (lambda images: _images_request(images, raw=True, name="resnet"), "NOT_FOUND", "model 'resnet' is not served here"),
        (lambda images: _images_request(images, raw=False, version="2"), "NOT_FOUND", "has no version '2'"),
        (lambda images: _fp64_request(), "INVALID_ARGUMENT", "must be float32, got float64"),
        (lambda images: _wrong_shape_request(), "INVALID_ARGUMENT", "got [1, 8, 8, 3]"),
        (lambda images: _images_request([b"not a jpeg"], raw=True), "INVALID_ARGUMENT", "image 0: not a decodable image"),
        (lambda images: _images_request(images, raw=False, outputs=["logits"]), "INVALID_ARGUMENT", "unknown outputs ['logits']"),
    ],
)
def test_error_table(channel, images, make_request, code, detail):
    with pytest.raises(grpc.RpcError) as raised:
        oip_call(channel, "ModelInfer")(make_request(images), timeout=TIMEOUT)
    assert raised.value.code().name == code
    assert detail in raised.value.details()


def test_model_ready_of_an_unknown_model_is_not_found(channel):
    with pytest.raises(grpc.RpcError) as raised:
        oip_call(channel, "ModelReady")(oip.ModelReadyRequest(name="resnet"), timeout=TIMEOUT)
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND
