"""The gateway reads only the model name and version from a request's bytes, skipping its tensors."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaflow.fpga_runtime import codec
from fpgaflow.fpga_runtime.cluster.gateway import length_delimited_fields, model_infer_target, predict_target
from fpgaflow.fpga_runtime.errors import InvalidInput
from fpgaflow.fpga_runtime.proto import open_inference_pb2 as oip
from fpgaflow.fpga_runtime.proto import tf_serving_pb2 as tf


def _predict(name: str, **version) -> bytes:
    request = tf.PredictRequest(output_filter=["probabilities"])
    request.inputs["images"].CopyFrom(codec.numpy_to_tensor_proto([b"\xff\xd8 not really a jpeg" * 50]))
    request.model_spec.name = name
    if "number" in version:
        request.model_spec.version.value = version["number"]
    if "label" in version:
        request.model_spec.version_label = version["label"]
    return request.SerializeToString()


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (_predict("tiny"), ("tiny", "")),
        (_predict("tiny", number=7), ("tiny", "7")),
        (_predict("resnet", label="champion"), ("resnet", "champion")),
        (_predict(""), ("", "")),
        (tf.PredictRequest().SerializeToString(), ("", "")),
    ],
)
def test_predict_target(request_bytes, expected):
    assert predict_target(request_bytes) == expected


def test_model_infer_target_reads_name_and_version_of_a_raw_request():
    request = oip.ModelInferRequest(model_name="tiny", model_version="3", id="r1")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(np.zeros(2, np.float32).tobytes())
    assert model_infer_target(request.SerializeToString()) == ("tiny", "3")


def test_fields_of_every_wire_type_are_skipped():
    request = oip.ModelInferRequest(model_name="m", id="x")
    request.parameters["flag"].bool_param = True
    request.parameters["count"].int64_param = -5
    request.inputs.add(name="input", datatype="FP32", shape=[1], contents=oip.InferTensorContents(fp32_contents=[1.5]))
    data = request.SerializeToString()
    assert length_delimited_fields(data, frozenset({1})) == {1: b"m"}


@pytest.mark.parametrize("damaged", [b"\x0a\x05ab", b"\x0a", b"\x0b\x00", b"\x80"])
def test_malformed_requests_are_invalid_input(damaged):
    with pytest.raises(InvalidInput, match="malformed request"):
        length_delimited_fields(damaged, frozenset({1}))
