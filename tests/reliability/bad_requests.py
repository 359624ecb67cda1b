"""Malformed requests and the status each must get from the one error table (fpgaflow.fpga_runtime.errors).

Used by the property-based tests against a node and the gateway. Statuses come from the error
classes themselves, so a change of the table changes what is expected, in one place. A request
larger than the receive limit never reaches our code: gRPC refuses it with RESOURCE_EXHAUSTED,
the status :class:`ResourceExhausted` carries too.
"""

from __future__ import annotations

import io
import struct
import zlib

import grpc
import numpy as np
from PIL import Image

from fpgaflow.fpga_runtime import codec
from fpgaflow.fpga_runtime.errors import InvalidInput, ModelNotFound, ResourceExhausted
from fpgaflow.fpga_runtime.proto import tf_serving_pb2 as tfs
from fpgaflow.fpga_runtime.proto import tf_tensor_pb2 as tf
from fpgaflow.fpga_runtime.protocol import TF_PREDICT
from tests.fixtures.wire import tf_predict

BAD_INPUT = InvalidInput.status
UNKNOWN = ModelNotFound.status
TOO_LARGE = ResourceExhausted.status
TIMEOUT = 30


def images_request(
    images: list[bytes], name: str = "tiny", version: int | None = None, signature: str = ""
) -> tfs.PredictRequest:
    request = tfs.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["images"].CopyFrom(
        tf.TensorProto(dtype=tf.DT_STRING, tensor_shape=codec.tf_shape([len(images)]), string_val=images)
    )
    return request


def array_request(array: np.ndarray, name: str = "tiny") -> tfs.PredictRequest:
    request = tfs.PredictRequest()
    request.model_spec.name = name
    request.inputs["input"].CopyFrom(codec.numpy_to_tensor_proto(array))
    return request


def status_of(channel: grpc.Channel, request: tfs.PredictRequest) -> tuple[grpc.StatusCode, str]:
    try:
        tf_predict(channel)(request, timeout=TIMEOUT)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def raw_status_of(channel: grpc.Channel, data: bytes) -> tuple[grpc.StatusCode, str]:
    try:
        channel.unary_unary(TF_PREDICT)(data, timeout=TIMEOUT)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def encode(width: int, height: int, image_format: str, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, image_format)
    return buffer.getvalue()


# -- decompression bombs: a huge header over (almost) no data, made without allocating the pixels ---


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png_bomb(width: int, height: int) -> bytes:
    """A PNG whose IHDR says width x height RGB, with a few bytes of compressed rows."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * 1024, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def jpeg_bomb(width: int, height: int) -> bytes:
    """A small real JPEG whose start-of-frame marker is rewritten to width x height."""
    data = bytearray(encode(8, 8, "JPEG"))
    marker = data.index(b"\xff\xc0")  # baseline SOF0: FFC0, length(2), precision(1), height(2), width(2)
    struct.pack_into(">HH", data, marker + 5, height, width)
    return bytes(data)


def bmp_bomb(width: int, height: int) -> bytes:
    """A small real BMP whose info header says width x height."""
    data = bytearray(encode(8, 8, "BMP"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


BOMBS = {"PNG": png_bomb, "JPEG": jpeg_bomb, "BMP": bmp_bomb}
