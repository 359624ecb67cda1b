"""The one place protos become numpy arrays and back.

TensorFlow Serving ``TensorProto`` (numeric ``tensor_content`` or the typed ``*_val`` fields,
``DT_STRING`` as ``string_val``) and Open Inference Protocol tensors (typed
``InferTensorContents`` or ``raw_*_contents``). Strings are numpy object arrays of ``bytes``.
Every malformed tensor raises :class:`~fpgaflow.fpga_runtime.errors.InvalidInput` naming the tensor and
the problem.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fpgaflow.fpga_runtime.errors import InvalidInput
from fpgaflow.fpga_runtime.proto import open_inference_pb2 as oip
from fpgaflow.fpga_runtime.proto import tf_tensor_pb2 as tf

STRING = np.dtype(object)


@dataclass(frozen=True)
class _TfType:
    dtype: np.dtype
    val_field: str


# TensorFlow's tensor.proto: which repeated field carries each dtype when tensor_content is empty.
_TF_TYPES: dict[tf.DataType, _TfType] = {
    tf.DT_FLOAT: _TfType(np.dtype(np.float32), "float_val"),
    tf.DT_DOUBLE: _TfType(np.dtype(np.float64), "double_val"),
    tf.DT_HALF: _TfType(np.dtype(np.float16), "half_val"),
    tf.DT_INT8: _TfType(np.dtype(np.int8), "int_val"),
    tf.DT_INT16: _TfType(np.dtype(np.int16), "int_val"),
    tf.DT_INT32: _TfType(np.dtype(np.int32), "int_val"),
    tf.DT_UINT8: _TfType(np.dtype(np.uint8), "int_val"),
    tf.DT_UINT16: _TfType(np.dtype(np.uint16), "int_val"),
    tf.DT_INT64: _TfType(np.dtype(np.int64), "int64_val"),
    tf.DT_UINT32: _TfType(np.dtype(np.uint32), "uint32_val"),
    tf.DT_UINT64: _TfType(np.dtype(np.uint64), "uint64_val"),
    tf.DT_BOOL: _TfType(np.dtype(np.bool_), "bool_val"),
    tf.DT_STRING: _TfType(STRING, "string_val"),
}
_TF_ENUM_BY_DTYPE = {spec.dtype: enum for enum, spec in _TF_TYPES.items()}


@dataclass(frozen=True)
class _OipType:
    dtype: np.dtype
    contents_field: str | None  # None: only raw contents can carry it


# Open Inference Protocol datatypes and the InferTensorContents field of each.
_OIP_TYPES: dict[str, _OipType] = {
    "BOOL": _OipType(np.dtype(np.bool_), "bool_contents"),
    "UINT8": _OipType(np.dtype(np.uint8), "uint_contents"),
    "UINT16": _OipType(np.dtype(np.uint16), "uint_contents"),
    "UINT32": _OipType(np.dtype(np.uint32), "uint_contents"),
    "UINT64": _OipType(np.dtype(np.uint64), "uint64_contents"),
    "INT8": _OipType(np.dtype(np.int8), "int_contents"),
    "INT16": _OipType(np.dtype(np.int16), "int_contents"),
    "INT32": _OipType(np.dtype(np.int32), "int_contents"),
    "INT64": _OipType(np.dtype(np.int64), "int64_contents"),
    "FP16": _OipType(np.dtype(np.float16), None),
    "FP32": _OipType(np.dtype(np.float32), "fp32_contents"),
    "FP64": _OipType(np.dtype(np.float64), "fp64_contents"),
    "BYTES": _OipType(STRING, "bytes_contents"),
}
_OIP_NAME_BY_DTYPE = {spec.dtype: name for name, spec in _OIP_TYPES.items()}

# Service-definition dtype names (fpgaflow.fpga_runtime.service.TensorSpec) → numpy.
SPEC_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "int64": np.dtype(np.int64),
    "int32": np.dtype(np.int32),
    "string": STRING,
}


# -- shapes and dtype names --------------------------------------------------------------------


def _checked_shape(name: str, dims: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(size) for size in dims)
    if any(size < 0 for size in shape):
        raise InvalidInput(f"tensor {name!r}: shape {list(shape)} has a negative dimension")
    return shape


def tf_shape(shape: Sequence[int]) -> tf.TensorShapeProto:
    """A TensorShapeProto; -1 marks a free dimension."""
    return tf.TensorShapeProto(dim=[tf.TensorShapeProto.Dim(size=int(size)) for size in shape])


def tf_dtype(dtype: np.dtype | str) -> tf.DataType:
    """The TensorFlow DataType enum of a numpy dtype or a service-definition dtype name."""
    numpy_dtype = SPEC_DTYPES[dtype] if isinstance(dtype, str) else np.dtype(dtype)
    try:
        return _TF_ENUM_BY_DTYPE[numpy_dtype]
    except KeyError:
        raise TypeError(f"numpy dtype {dtype} has no TensorFlow DataType here") from None


def oip_datatype(dtype: np.dtype | str) -> str:
    """The Open Inference Protocol datatype name of a numpy dtype or a service-definition dtype name."""
    numpy_dtype = SPEC_DTYPES[dtype] if isinstance(dtype, str) else np.dtype(dtype)
    try:
        return _OIP_NAME_BY_DTYPE[numpy_dtype]
    except KeyError:
        raise TypeError(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from None


def _as_bytes_array(values: Sequence[bytes] | np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(len(values), dtype=STRING)
    array[:] = [bytes(value) for value in values]
    return array.reshape(shape)


def _from_buffer(name: str, data: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise InvalidInput(
            f"tensor {name!r}: {len(data)} content bytes do not match shape {list(shape)} of {dtype} ({expected} bytes)"
        )
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype, copy=True).reshape(shape)


def _from_values(name: str, values: Sequence | np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidInput(f"tensor {name!r}: {len(values)} values do not match shape {list(shape)} ({count} elements)")
    if dtype == STRING:
        return _as_bytes_array(values, shape)
    try:
        return np.asarray(list(values), dtype=dtype).reshape(shape)
    except OverflowError as error:
        raise InvalidInput(f"tensor {name!r}: a value does not fit {dtype}: {error}") from None


# -- TensorFlow Serving TensorProto ------------------------------------------------------------


def tensor_proto_to_numpy(proto: tf.TensorProto, name: str = "tensor") -> np.ndarray:
    """A TensorProto as a numpy array (DT_STRING → object array of bytes)."""
    spec = _TF_TYPES.get(proto.dtype)
    if spec is None:
        dtype_name = tf.DataType.Name(proto.dtype) if proto.dtype in tf.DataType.values() else str(proto.dtype)
        raise InvalidInput(f"tensor {name!r}: unsupported dtype {dtype_name}")
    if proto.tensor_shape.unknown_rank:
        raise InvalidInput(f"tensor {name!r}: a shape of unknown rank cannot be read")
    shape = _checked_shape(name, [dim.size for dim in proto.tensor_shape.dim])
    if proto.tensor_content:
        if spec.dtype == STRING:
            raise InvalidInput(f"tensor {name!r}: DT_STRING values go in string_val, not tensor_content")
        return _from_buffer(name, proto.tensor_content, spec.dtype, shape)
    values = getattr(proto, spec.val_field)
    if spec.dtype == np.float16:
        bits = np.asarray(values, dtype=np.uint16)
        return _from_values(name, bits, np.dtype(np.uint16), shape).view(np.float16)
    return _from_values(name, values, spec.dtype, shape)


def numpy_to_tensor_proto(array: np.ndarray | Sequence[bytes]) -> tf.TensorProto:
    """A numpy array (or a list of bytes) as a TensorProto: numbers in tensor_content, strings in string_val."""
    if isinstance(array, (list, tuple)):
        array = _as_bytes_array(array, (len(array),))
    array = np.asarray(array)
    if array.dtype.kind in "SU":
        array = array.astype(STRING)
    proto = tf.TensorProto(dtype=tf_dtype(array.dtype), tensor_shape=tf_shape(array.shape))
    if array.dtype == STRING:
        proto.string_val.extend(_encode_strings(array))
    else:
        proto.tensor_content = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return proto


def _encode_strings(array: np.ndarray) -> list[bytes]:
    return [item if isinstance(item, bytes) else str(item).encode("utf-8") for item in array.reshape(-1)]


# -- Open Inference Protocol (KServe v2) --------------------------------------------------------


def _read_raw_bytes_elements(name: str, data: bytes, count: int) -> list[bytes]:
    """BYTES raw contents: every element is a 4-byte little-endian length, then that many bytes."""
    elements, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise InvalidInput(f"tensor {name!r}: raw BYTES contents end inside a length prefix")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise InvalidInput(f"tensor {name!r}: raw BYTES element of {length} bytes runs past the end of the contents")
        elements.append(data[offset : offset + length])
        offset += length
    if len(elements) != count:
        raise InvalidInput(f"tensor {name!r}: {len(elements)} raw BYTES elements do not match the shape ({count} elements)")
    return elements


def infer_input_to_numpy(tensor: oip.ModelInferRequest.InferInputTensor, raw: bytes | None = None) -> np.ndarray:
    """An input tensor as numpy, from its typed contents or from ``raw`` (its raw_input_contents entry)."""
    name = tensor.name
    spec = _OIP_TYPES.get(tensor.datatype)
    if spec is None:
        raise InvalidInput(f"tensor {name!r}: unsupported datatype {tensor.datatype!r}; use one of {sorted(_OIP_TYPES)}")
    shape = _checked_shape(name, tensor.shape)
    if raw is not None:
        if tensor.HasField("contents"):
            raise InvalidInput(f"tensor {name!r}: give either contents or raw_input_contents, not both")
        if spec.dtype == STRING:
            return _as_bytes_array(_read_raw_bytes_elements(name, raw, math.prod(shape)), shape)
        return _from_buffer(name, raw, spec.dtype, shape)
    if spec.contents_field is None:
        raise InvalidInput(f"tensor {name!r}: {tensor.datatype} data must be sent in raw_input_contents")
    return _from_values(name, getattr(tensor.contents, spec.contents_field), spec.dtype, shape)


def infer_inputs_to_numpy(request: oip.ModelInferRequest) -> dict[str, np.ndarray]:
    """All inputs of a ModelInferRequest by name, raw or typed."""
    raw_contents = list(request.raw_input_contents)
    if raw_contents and len(raw_contents) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw_contents)} entries for {len(request.inputs)} inputs; give one per input"
        )
    names = [tensor.name for tensor in request.inputs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidInput(f"inputs {repeated} are given more than once")
    return {
        tensor.name: infer_input_to_numpy(tensor, raw_contents[index] if raw_contents else None)
        for index, tensor in enumerate(request.inputs)
    }


def _raw_bytes(array: np.ndarray) -> bytes:
    if array.dtype == STRING:
        return b"".join(struct.pack("<I", len(item)) + item for item in _encode_strings(array))
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def numpy_to_infer_outputs(
    arrays: Mapping[str, np.ndarray], raw: bool
) -> tuple[list[oip.ModelInferResponse.InferOutputTensor], list[bytes]]:
    """Output tensors and their raw_output_contents (empty unless raw).

    Raw is used when asked for, and whenever a datatype has no typed contents field (FP16):
    the protocol does not allow mixing the two forms in one response.
    """
    prepared = {}
    for name, array in arrays.items():
        array = np.asarray(array)
        prepared[name] = array.astype(STRING) if array.dtype.kind in "SU" else array
    datatypes = {name: oip_datatype(array.dtype) for name, array in prepared.items()}
    raw = raw or any(_OIP_TYPES[datatype].contents_field is None for datatype in datatypes.values())
    tensors, raw_contents = [], []
    for name, array in prepared.items():
        tensor = oip.ModelInferResponse.InferOutputTensor(name=name, datatype=datatypes[name], shape=list(array.shape))
        if raw:
            raw_contents.append(_raw_bytes(array))
        else:
            values = _encode_strings(array) if array.dtype == STRING else array.reshape(-1).tolist()
            contents_field = _OIP_TYPES[datatypes[name]].contents_field
            assert contents_field is not None  # raw is set whenever a datatype has no contents field
            getattr(tensor.contents, contents_field).extend(values)
        tensors.append(tensor)
    return tensors, raw_contents


def infer_outputs_to_numpy(response: oip.ModelInferResponse) -> dict[str, np.ndarray]:
    """The client side of :func:`numpy_to_infer_outputs`: every output of a response by name."""
    request = oip.ModelInferRequest(raw_input_contents=response.raw_output_contents)
    for tensor in response.outputs:
        request.inputs.add(
            name=tensor.name,
            datatype=tensor.datatype,
            shape=tensor.shape,
            contents=tensor.contents if tensor.HasField("contents") else None,
        )
    return infer_inputs_to_numpy(request)
