"""TF Serving PredictionService on a real node: results, metadata and every row of the error table."""

import grpc
import numpy as np
import pytest

from fpgaflow.fpga_runtime import codec
from fpgaflow.fpga_runtime.preprocessing import preprocess
from fpgaflow.fpga_runtime.proto import tf_serving_pb2 as tfs
from fpgaflow.fpga_runtime.proto import tf_tensor_pb2 as tf
from fpgaflow.fpga_runtime.protocol import SIGNATURE_DEF_MAP_TYPE_URL, TENSOR_PROTO_TYPE_URL, TF_PREDICT
from fpgaflow.fpga_runtime.server import ModelServer, create_server
from fpgaflow.fpga_runtime.service import load_service
from tests.fixtures.tiny_service import (
    CLASS_NAMES,
    INPUT_TENSORS,
    OUTPUT_TENSORS,
    reference_probabilities,
    write_tiny_service,
)
from tests.fixtures.wire import tf_metadata, tf_predict

TIMEOUT = 10


@pytest.fixture()
def broken_server(tmp_path):
    """A node whose CPU stage fails at run time for batches of fewer than 5 images."""
    node, _port = create_server(write_tiny_service(tmp_path / "broken", name="broken", head_fails_at_run_time=True))
    node.start()
    node.wait_until_ready(60)
    yield node
    node.stop(0).wait()


def _request(inputs, name="tiny", output_filter=(), version=None, signature=""):
    request = tfs.PredictRequest(output_filter=list(output_filter))
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(value if isinstance(value, tf.TensorProto) else codec.numpy_to_tensor_proto(value))
    return request


def _call_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=TIMEOUT)
    return raised.value


def test_predict_images_equals_running_the_onnx_stages_directly(channel, service_dir, images):
    response = tf_predict(channel)(_request({"images": images}), timeout=TIMEOUT)
    assert list(response.outputs) == ["probabilities"]
    probabilities = codec.tensor_proto_to_numpy(response.outputs["probabilities"])
    np.testing.assert_allclose(probabilities, reference_probabilities(service_dir, images), rtol=1e-6, atol=1e-7)
    assert response.model_spec.name == "tiny" and response.model_spec.version.value == 7
    assert response.model_spec.signature_name == "serving_default"


def test_predict_by_tensor_names_returns_the_one_filtered_output_under_its_name(channel, service_dir, images):
    request = _request({INPUT_TENSORS: images}, output_filter=[OUTPUT_TENSORS])
    response = tf_predict(channel)(request, timeout=TIMEOUT)
    assert list(response.outputs) == [OUTPUT_TENSORS]
    probabilities = codec.tensor_proto_to_numpy(response.outputs[OUTPUT_TENSORS])
    np.testing.assert_allclose(probabilities, reference_probabilities(service_dir, images), rtol=1e-6, atol=1e-7)


def test_the_signature_gives_each_plain_name_its_tensor_name(channel):
    request = tfs.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "tiny"
    response = tf_metadata(channel)(request, timeout=TIMEOUT)
    signature = tfs.SignatureDefMap.FromString(response.metadata["signature_def"].value).signature_def["serving_default"]
    assert {key: info.name for key, info in signature.inputs.items()} == {"images": INPUT_TENSORS, "input": "input:0"}
    assert {key: info.name for key, info in signature.outputs.items()} == {
        "probabilities": OUTPUT_TENSORS,
        "classes": "classes:0",
        "class_names": "class_names:0",
    }


def test_predict_preprocessed_float_input_and_output_filter(channel, service_dir, images):
    spec = load_service(service_dir).preprocessing
    batch = np.stack([preprocess(data, spec) for data in images])
    request = _request({"input": batch}, output_filter=["classes", "class_names", "probabilities"], version=7)
    outputs = {
        key: codec.tensor_proto_to_numpy(value) for key, value in tf_predict(channel)(request, timeout=TIMEOUT).outputs.items()
    }
    expected = reference_probabilities(service_dir, images)
    np.testing.assert_allclose(outputs["probabilities"], expected, rtol=1e-6, atol=1e-7)
    assert outputs["classes"].tolist() == expected.argmax(axis=1).tolist()
    assert outputs["class_names"].tolist() == [CLASS_NAMES[i].encode() for i in expected.argmax(axis=1)]


def test_float_val_input_is_accepted_like_tensor_content(channel, service_dir, images):
    spec = load_service(service_dir).preprocessing
    batch = preprocess(images[0], spec)[np.newaxis]
    proto = tf.TensorProto(dtype=tf.DT_FLOAT, tensor_shape=codec.tf_shape(batch.shape), float_val=batch.reshape(-1).tolist())
    response = tf_predict(channel)(_request({"input": proto}), timeout=TIMEOUT)
    np.testing.assert_allclose(
        codec.tensor_proto_to_numpy(response.outputs["probabilities"]),
        reference_probabilities(service_dir, images[:1]),
        rtol=1e-6,
    )


def test_get_model_metadata_returns_the_signature_def_and_class_names(channel):
    request = tfs.GetModelMetadataRequest(metadata_field=["signature_def", "class_names"])
    request.model_spec.name = "tiny"
    response = tf_metadata(channel)(request, timeout=TIMEOUT)
    packed = response.metadata["signature_def"]
    assert packed.type_url == SIGNATURE_DEF_MAP_TYPE_URL
    signature = tfs.SignatureDefMap.FromString(packed.value).signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert signature.inputs["images"].dtype == tf.DT_STRING
    assert [dim.size for dim in signature.inputs["input"].tensor_shape.dim] == [-1, 32, 32, 3]
    assert [dim.size for dim in signature.outputs["probabilities"].tensor_shape.dim] == [-1, len(CLASS_NAMES)]
    assert set(signature.outputs) == {"probabilities", "classes", "class_names"}
    assert response.metadata["class_names"].type_url == TENSOR_PROTO_TYPE_URL
    names = codec.tensor_proto_to_numpy(tf.TensorProto.FromString(response.metadata["class_names"].value))
    assert names.tolist() == [name.encode() for name in CLASS_NAMES]


def _string_tensor_of_shape(shape):
    return tf.TensorProto(dtype=tf.DT_STRING, tensor_shape=codec.tf_shape(shape), string_val=[b"x"] * int(np.prod(shape)))


@pytest.mark.parametrize(
    ("make_request", "code", "detail"),
    [
        (lambda images: _request({"images": images}, name="resnet"), "NOT_FOUND", "model 'resnet' is not served here"),
        (lambda images: _request({"images": images}, version=8), "NOT_FOUND", "has no version '8'; versions: ['7']"),
        (lambda images: _request({"images": images}, signature="classify"), "NOT_FOUND", "signature 'classify' not found"),
        (
            lambda images: _request({"input": np.zeros((1, 32, 32, 3), np.float64)}),
            "INVALID_ARGUMENT",
            "must be float32, got float64",
        ),
        (
            lambda images: _request({"input": np.zeros((1, 24, 24, 3), np.float32)}),
            "INVALID_ARGUMENT",
            "must have shape [-1, 32, 32, 3]",
        ),
        (lambda images: _request({"images": _string_tensor_of_shape([1, 1])}), "INVALID_ARGUMENT", "1-D batch of encoded images"),
        (lambda images: _request({"images": [images[0], b"\xff\xd8 truncated"]}), "INVALID_ARGUMENT", "image 1:"),
        (lambda images: _request({"images": images}, output_filter=["logits"]), "INVALID_ARGUMENT", "unknown outputs ['logits']"),
        (lambda images: _request({"pixels": images}), "INVALID_ARGUMENT", "give exactly one input"),
        (
            lambda images: _request({INPUT_TENSORS: images}, output_filter=["dense/Softmax:0"]),
            "INVALID_ARGUMENT",
            f"unknown outputs ['dense/Softmax:0'] of model 'tiny'; outputs: ['probabilities', 'classes', 'class_names'] "
            f"(by name or tensor name: 'probabilities' or '{OUTPUT_TENSORS}'",
        ),
        (
            lambda images: _request(
                {"images": tf.TensorProto(dtype=tf.DT_STRING, tensor_shape=codec.tf_shape([2]), string_val=[b"a"])}
            ),
            "INVALID_ARGUMENT",
            "1 values do not match shape [2]",
        ),
        (
            lambda images: _request({"images": tf.TensorProto(dtype=tf.DT_COMPLEX64, tensor_shape=codec.tf_shape([1]))}),
            "INVALID_ARGUMENT",
            "unsupported dtype DT_COMPLEX64",
        ),
    ],
)
def test_error_table(channel, images, make_request, code, detail):
    error = _call_error(tf_predict(channel), make_request(images))
    assert error.code().name == code
    assert detail in error.details()


def test_unknown_metadata_field_is_invalid_argument(channel):
    request = tfs.GetModelMetadataRequest(metadata_field=["signature_def", "graph"])
    error = _call_error(tf_metadata(channel), request)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and "unknown metadata_field ['graph']" in error.details()


def test_the_server_keeps_answering_after_bad_requests(channel, images):
    _call_error(tf_predict(channel), _request({"images": [b"garbage"]}))
    response = tf_predict(channel)(_request({"images": images[:1]}), timeout=TIMEOUT)
    assert codec.tensor_proto_to_numpy(response.outputs["probabilities"]).shape == (1, len(CLASS_NAMES))


def test_bytes_that_are_not_a_predict_request_are_invalid_argument(channel, images):
    raw_predict = channel.unary_unary(TF_PREDICT)
    with pytest.raises(grpc.RpcError) as raised:
        raw_predict(b"\x0a\xff\xff\xff", timeout=TIMEOUT)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "the request is not a valid PredictRequest" in raised.value.details()
    assert tf_predict(channel)(_request({"images": images[:1]}), timeout=TIMEOUT).outputs["probabilities"]


def test_not_loaded_yet_is_unavailable(service_dir, images):
    node = ModelServer("127.0.0.1:0")
    node.data_plane.register(load_service(service_dir))
    node.start()
    try:
        with grpc.insecure_channel(node.address) as channel:
            error = _call_error(tf_predict(channel), _request({"images": images[:1]}))
            assert error.code() is grpc.StatusCode.UNAVAILABLE and "still loading" in error.details()
    finally:
        node.stop(0).wait()


def test_internal_errors_reach_the_client_as_a_clean_message(broken_server, images):
    with grpc.insecure_channel(broken_server.address) as channel:
        error = _call_error(tf_predict(channel), _request({"images": images[:1]}, name="broken"))
        assert error.code() is grpc.StatusCode.INTERNAL
        assert "CPU stage 'head' failed" in error.details()
        assert "Traceback" not in error.details() and 'File "' not in error.details()
        still_answering = _call_error(tf_predict(channel), _request({"images": [b"garbage"]}, name="broken"))
        assert still_answering.code() is grpc.StatusCode.INVALID_ARGUMENT
