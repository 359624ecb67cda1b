import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fpgaflow.fpga_runtime import codec
from fpgaflow.fpga_runtime.errors import InvalidInput
from fpgaflow.fpga_runtime.proto import open_inference_pb2 as oip
from fpgaflow.fpga_runtime.proto import tf_tensor_pb2 as tf

NUMERIC_DTYPES = [
    np.float32,
    np.float64,
    np.float16,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
]


@settings(max_examples=40, deadline=None)
@given(array=hnp.arrays(dtype=st.sampled_from(NUMERIC_DTYPES), shape=hnp.array_shapes(min_dims=0, max_dims=4, max_side=5)))
def test_tensor_proto_round_trip_keeps_dtype_shape_and_values(array):
    back = codec.tensor_proto_to_numpy(codec.numpy_to_tensor_proto(array))
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_float_val_and_int_val_fields_are_read_with_their_dtype():
    floats = tf.TensorProto(dtype=tf.DT_FLOAT, tensor_shape=codec.tf_shape([2, 2]), float_val=[1.5, -2, 3, 4])
    np.testing.assert_array_equal(codec.tensor_proto_to_numpy(floats), np.array([[1.5, -2], [3, 4]], np.float32))
    ints = tf.TensorProto(dtype=tf.DT_UINT8, tensor_shape=codec.tf_shape([3]), int_val=[0, 7, 255])
    result = codec.tensor_proto_to_numpy(ints)
    assert result.dtype == np.uint8 and result.tolist() == [0, 7, 255]


def test_half_val_holds_bit_patterns():
    values = np.array([0.5, -3.25], np.float16)
    proto = tf.TensorProto(dtype=tf.DT_HALF, tensor_shape=codec.tf_shape([2]), half_val=values.view(np.uint16).tolist())
    np.testing.assert_array_equal(codec.tensor_proto_to_numpy(proto), values)


def test_strings_go_to_string_val_and_come_back_as_bytes():
    proto = codec.numpy_to_tensor_proto([b"\xff\xd8jpeg", b""])
    assert proto.dtype == tf.DT_STRING and list(proto.string_val) == [b"\xff\xd8jpeg", b""]
    back = codec.tensor_proto_to_numpy(proto)
    assert back.dtype == object and back.tolist() == [b"\xff\xd8jpeg", b""]


def test_text_strings_are_encoded_as_utf8():
    proto = codec.numpy_to_tensor_proto(np.array(["chat", "hund"]))
    assert list(proto.string_val) == [b"chat", b"hund"]


@pytest.mark.parametrize(
    ("proto", "problem"),
    [
        (
            tf.TensorProto(dtype=tf.DT_FLOAT, tensor_shape=codec.tf_shape([2, 3]), float_val=[1, 2]),
            "2 values do not match shape [2, 3]",
        ),
        (tf.TensorProto(dtype=tf.DT_FLOAT, tensor_shape=codec.tf_shape([2]), tensor_content=b"\0" * 7), "7 content bytes"),
        (tf.TensorProto(dtype=tf.DT_COMPLEX64, tensor_shape=codec.tf_shape([1])), "unsupported dtype DT_COMPLEX64"),
        (tf.TensorProto(dtype=tf.DT_FLOAT, tensor_shape=codec.tf_shape([-1, 2])), "negative dimension"),
        (tf.TensorProto(dtype=tf.DT_STRING, tensor_shape=codec.tf_shape([1]), tensor_content=b"x"), "string_val"),
        (tf.TensorProto(dtype=tf.DT_FLOAT, tensor_shape=tf.TensorShapeProto(unknown_rank=True)), "unknown rank"),
        (tf.TensorProto(dtype=tf.DT_INT8, tensor_shape=codec.tf_shape([1]), int_val=[300]), "does not fit int8"),
    ],
)
def test_malformed_tensor_protos_are_invalid_input_naming_the_tensor(proto, problem):
    with pytest.raises(InvalidInput, match="'images'") as raised:
        codec.tensor_proto_to_numpy(proto, name="images")
    assert problem in str(raised.value)


def test_unknown_dtype_number_is_named():
    proto = tf.TensorProto(tensor_shape=codec.tf_shape([1]))
    proto.dtype = 77
    with pytest.raises(InvalidInput, match="unsupported dtype 77"):
        codec.tensor_proto_to_numpy(proto)


def test_dtype_names_for_service_definitions():
    assert codec.tf_dtype("float32") == tf.DT_FLOAT and codec.tf_dtype("string") == tf.DT_STRING
    assert codec.oip_datatype("int64") == "INT64" and codec.oip_datatype("string") == "BYTES"
    with pytest.raises(TypeError, match="complex64"):
        codec.tf_dtype(np.complex64)


# -- Open Inference Protocol ---------------------------------------------------------------------


@pytest.mark.parametrize("raw", [False, True])
@settings(max_examples=25, deadline=None)
@given(array=hnp.arrays(dtype=st.sampled_from(NUMERIC_DTYPES), shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4)))
def test_infer_outputs_round_trip(raw, array):
    tensors, raw_contents = codec.numpy_to_infer_outputs({"out": array}, raw=raw)
    back = codec.infer_outputs_to_numpy(oip.ModelInferResponse(outputs=tensors, raw_output_contents=raw_contents))["out"]
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_fp16_output_forces_raw_for_every_output_of_the_response():
    tensors, raw_contents = codec.numpy_to_infer_outputs({"a": np.ones(2, np.float32), "b": np.ones(2, np.float16)}, raw=False)
    assert len(raw_contents) == 2 and not any(tensor.HasField("contents") for tensor in tensors)


def test_bytes_raw_contents_use_length_prefixes():
    images = np.array([b"abc", b"\x00\x01"], dtype=object)
    tensors, raw_contents = codec.numpy_to_infer_outputs({"images": images}, raw=True)
    assert raw_contents == [struct.pack("<I", 3) + b"abc" + struct.pack("<I", 2) + b"\x00\x01"]
    request = oip.ModelInferRequest(raw_input_contents=raw_contents)
    request.inputs.add(name="images", datatype="BYTES", shape=[2])
    assert codec.infer_inputs_to_numpy(request)["images"].tolist() == [b"abc", b"\x00\x01"]


def test_typed_contents_inputs():
    request = oip.ModelInferRequest()
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 2])
    tensor.contents.fp32_contents.extend([0.25, 4.0])
    np.testing.assert_array_equal(codec.infer_inputs_to_numpy(request)["input"], np.array([[0.25, 4.0]], np.float32))


def _request(*tensors, raw=()):
    request = oip.ModelInferRequest(raw_input_contents=list(raw))
    for name, datatype, shape in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    return request


@pytest.mark.parametrize(
    ("request_", "problem"),
    [
        (_request(("x", "FP32", [2])), "0 values do not match shape [2]"),
        (_request(("x", "FP32", [2]), raw=[b"\0" * 4]), "4 content bytes"),
        (_request(("x", "FP8", [1])), "unsupported datatype 'FP8'"),
        (_request(("x", "FP16", [1])), "must be sent in raw_input_contents"),
        (_request(("x", "FP32", [1]), ("y", "FP32", [1]), raw=[b"\0" * 4]), "1 entries for 2 inputs"),
        (_request(("x", "FP32", [1]), ("x", "FP32", [1])), "given more than once"),
        (_request(("x", "BYTES", [1]), raw=[b"\x05\0\0\0ab"]), "runs past the end"),
        (_request(("x", "BYTES", [2]), raw=[b"\x01\0\0\0a"]), "1 raw BYTES elements"),
        (_request(("x", "BYTES", [1]), raw=[b"\x01\0"]), "inside a length prefix"),
    ],
)
def test_malformed_infer_inputs_are_invalid_input(request_, problem):
    with pytest.raises(InvalidInput) as raised:
        codec.infer_inputs_to_numpy(request_)
    assert problem in str(raised.value)


def test_contents_and_raw_together_are_refused():
    request = _request(("x", "FP32", [1]), raw=[b"\0" * 4])
    request.inputs[0].contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidInput, match="not both"):
        codec.infer_inputs_to_numpy(request)
