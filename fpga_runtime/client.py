"""Python client of a model server (or a gateway), over the TensorFlow Serving Predict API.

In the spirit of the original service's ``PredictionClient``, without its quirks: the access
token really is sent (``authorization: Bearer <token>``), every call has a deadline, only
UNAVAILABLE and DEADLINE_EXCEEDED are retried (with exponential backoff, on a fresh channel),
a channel idle for longer than ``channel_shutdown_timeout`` is rebuilt before use, the batch
dimension is stripped consistently, and failures raise :class:`PredictionError` with the status.

``outputs`` is what the original client took: None (the default output, an array), one name
(that output alone, an array) or a list of names (a list of arrays, in that order); names may be
plain (``probabilities``) or the tensor names registration printed as ``output_tensors``, and
``input_name`` likewise ``images`` or ``input_tensors`` (``Placeholder:0``).

    with PredictionClient("localhost", 8500) as client:
        probabilities = client.score_file("cat.jpg")          # [classes]
        print(client.top_k(probabilities, k=5))               # [(name, probability), ...]
        found = client.detect_file("street.jpg")              # a detection service: Detections
        print(found.to_dict())                                # [{label, class, score, box}, ...]
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeAlias

import grpc
import numpy as np

from fpgaflow.fpga_runtime import codec
from fpgaflow.fpga_runtime.detections import Detections, detections_from_outputs
from fpgaflow.fpga_runtime.errors import PredictionError
from fpgaflow.fpga_runtime.proto import tf_serving_pb2 as pb
from fpgaflow.fpga_runtime.proto import tf_tensor_pb2
from fpgaflow.fpga_runtime.protocol import (
    AUTHORIZATION_METADATA,
    CLASS_NAMES_FIELD,
    DEFAULT_SIGNATURE,
    DETECTION_OUTPUTS,
    IMAGES_INPUT,
    PREPROCESSED_INPUT,
    SIGNATURE_DEF_FIELD,
    TF_GET_MODEL_METADATA,
    TF_PREDICT,
    bearer,
)
from fpgaflow.fpga_runtime.tls import channel_credentials

log = logging.getLogger(__name__)
RETRIED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
Outputs: TypeAlias = str | Sequence[str] | None


class PredictionClient:
    """Scores images against the model ``service_name`` (empty: the server's only model).

    ``timeout`` is the deadline of each attempt in seconds; ``retries`` the extra attempts after
    UNAVAILABLE or DEADLINE_EXCEEDED, waiting ``backoff``, 2 x ``backoff``, ... (at most
    ``max_backoff``) seconds between them. TLS: ``use_ssl`` with the system's roots, or ``ca_cert`` (a PEM
    file; ``root_certificates`` its bytes) to trust; ``cert`` and ``key`` present a client certificate
    (mutual TLS). Any of the three files turns TLS on.
    """

    def __init__(
        self,
        address: str,
        port: int,
        use_ssl: bool = False,
        access_token: str | None = None,
        service_name: str = "",
        channel_shutdown_timeout: float = 120.0,
        timeout: float = 10.0,
        retries: int = 5,
        *,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        root_certificates: bytes | None = None,
        ca_cert: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")
        self.target = f"{address}:{port}"
        tls_files = (ca_cert, cert, key)
        self.use_ssl = use_ssl or any(path is not None for path in tls_files)
        self.client_certificate = cert is not None
        paths = [Path(path) if path is not None else None for path in tls_files]
        self._credentials = channel_credentials(*paths, root_certificates=root_certificates) if self.use_ssl else None
        self.service_name = service_name
        self.channel_shutdown_timeout = channel_shutdown_timeout
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self._metadata = ((AUTHORIZATION_METADATA, bearer(access_token)),) if access_token else ()
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._last_used = 0.0
        self._class_names: tuple[str, ...] | None = None
        self.channels_opened = 0

    # -- scoring ---------------------------------------------------------------------------------

    def score_file(self, path: str | Path, input_name: str = IMAGES_INPUT, outputs: Outputs = None, timeout: float | None = None):
        """One image file → its default output (probabilities ``[classes]``), one named output, or a list of them."""
        return self.score_image(Path(path).read_bytes(), input_name, outputs, timeout)

    def score_image(self, image: bytes, input_name: str = IMAGES_INPUT, outputs: Outputs = None, timeout: float | None = None):
        """One encoded image → its default output, one named output or a list of them, batch dimension removed."""
        return _first(self.score_images([image], input_name, outputs, timeout))

    def score_images(
        self, images: Sequence[bytes], input_name: str = IMAGES_INPUT, outputs: Outputs = None, timeout: float | None = None
    ):
        """A batch of encoded images → the default output ``[N, ...]``, one named output or a list of them."""
        if isinstance(images, (bytes, bytearray)):
            raise TypeError("score_images takes a sequence of encoded images; use score_image for one")
        names = _output_filter(outputs)
        return _select(self.predict({input_name: codec.numpy_to_tensor_proto(list(images))}, names, timeout), outputs)

    def score_numpy_array(
        self, array: np.ndarray, input_name: str = PREPROCESSED_INPUT, outputs: Outputs = None, timeout: float | None = None
    ):
        """A preprocessed float32 image ``[H, W, 3]`` (→ ``[classes]``) or batch ``[N, H, W, 3]`` (→ ``[N, classes]``)."""
        array = np.asarray(array)
        single = array.ndim == 3
        batch = array[np.newaxis] if single else array
        result = _select(
            self.predict({input_name: codec.numpy_to_tensor_proto(batch)}, _output_filter(outputs), timeout), outputs
        )
        return _first(result) if single else result

    # -- detection -------------------------------------------------------------------------------

    def detect_file(self, path: str | Path, timeout: float | None = None) -> Detections:
        """One image file → its detections (best first, padding removed) from a detection service."""
        return self.detect_image(Path(path).read_bytes(), timeout)

    def detect_image(self, image: bytes, timeout: float | None = None) -> Detections:
        """One encoded image → its detections (boxes ``[K, 4]`` normalised ``[ymin, xmin, ymax, xmax]``, scores, classes)."""
        return self.detect_images([image], timeout)[0]

    def detect_images(self, images: Sequence[bytes], timeout: float | None = None) -> list[Detections]:
        """A batch of encoded images → one :class:`~fpgaflow.fpga_runtime.detections.Detections` per image."""
        if isinstance(images, (bytes, bytearray)):
            raise TypeError("detect_images takes a sequence of encoded images; use detect_image for one")
        outputs = self.predict({IMAGES_INPUT: codec.numpy_to_tensor_proto(list(images))}, DETECTION_OUTPUTS, timeout)
        return detections_from_outputs(outputs, self.class_names(timeout))

    def predict(
        self,
        inputs: Mapping[str, np.ndarray | tf_tensor_pb2.TensorProto],
        outputs: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """The raw Predict call: named inputs (arrays or TensorProtos) → every returned output by name."""
        request = pb.PredictRequest(output_filter=list(outputs or ()))
        request.model_spec.name = self.service_name
        request.model_spec.signature_name = DEFAULT_SIGNATURE
        for name, value in inputs.items():
            tensor = value if isinstance(value, tf_tensor_pb2.TensorProto) else codec.numpy_to_tensor_proto(value)
            request.inputs[name].CopyFrom(tensor)
        response = self._call(TF_PREDICT, request, pb.PredictResponse, timeout)
        return {name: codec.tensor_proto_to_numpy(tensor, name) for name, tensor in response.outputs.items()}

    # -- metadata --------------------------------------------------------------------------------

    def signature(self, timeout: float | None = None) -> pb.SignatureDef:
        """The model's ``serving_default`` signature (inputs and outputs with dtypes and shapes)."""
        response = self._metadata_call([SIGNATURE_DEF_FIELD], timeout)
        signatures = pb.SignatureDefMap.FromString(response.metadata[SIGNATURE_DEF_FIELD].value)
        return signatures.signature_def[DEFAULT_SIGNATURE]

    def class_names(self, timeout: float | None = None) -> tuple[str, ...]:
        """Class names in index order (asked once, then cached)."""
        if self._class_names is None:
            response = self._metadata_call([CLASS_NAMES_FIELD], timeout)
            tensor = tf_tensor_pb2.TensorProto.FromString(response.metadata[CLASS_NAMES_FIELD].value)
            self._class_names = tuple(name.decode("utf-8") for name in codec.tensor_proto_to_numpy(tensor, CLASS_NAMES_FIELD))
        return self._class_names

    def top_k(self, probabilities: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most probable classes of one image's probabilities, as (class name, probability)."""
        probabilities = np.asarray(probabilities).reshape(-1)
        names = self.class_names()
        if len(names) != probabilities.size:
            raise ValueError(f"{probabilities.size} probabilities for {len(names)} class names")
        order = np.argsort(-probabilities, kind="stable")[:k]
        return [(names[index], float(probabilities[index])) for index in order]

    # -- channel ---------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None

    def __enter__(self) -> PredictionClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _metadata_call(self, fields: list[str], timeout: float | None) -> pb.GetModelMetadataResponse:
        request = pb.GetModelMetadataRequest(metadata_field=fields)
        request.model_spec.name = self.service_name
        request.model_spec.signature_name = DEFAULT_SIGNATURE
        response = self._call(TF_GET_MODEL_METADATA, request, pb.GetModelMetadataResponse, timeout)
        missing = [name for name in fields if name not in response.metadata]
        if missing:
            raise PredictionError(grpc.StatusCode.UNIMPLEMENTED, f"the server returned no metadata {missing}")
        return response

    def _channel_for_call(self, fresh: bool) -> grpc.Channel:
        with self._lock:
            now = time.monotonic()
            idle = now - self._last_used
            if self._channel is not None and (fresh or idle > self.channel_shutdown_timeout):
                self._channel.close()
                self._channel = None
            if self._channel is None:
                self._channel = self._open_channel()
                self.channels_opened += 1
            self._last_used = now
            return self._channel

    def _open_channel(self) -> grpc.Channel:
        if self._credentials is not None:
            return grpc.secure_channel(self.target, self._credentials, options=self._options)
        return grpc.insecure_channel(self.target, options=self._options)

    def _connection_hint(self, status: grpc.StatusCode) -> str:
        """What a refused connection may mean, from the client's side of TLS (the server does not say why)."""
        if status is not grpc.StatusCode.UNAVAILABLE:
            return ""
        if not self.use_ssl:
            return " (if the server speaks TLS, connect with TLS: --ca-cert or --ssl)"
        if not self.client_certificate:
            return " (if the server requires mutual TLS, present a client certificate: --cert and --key)"
        return " (check that --ca-cert signed the server's certificate and the server's CA signed --cert)"

    def _call(self, method: str, request, response_type, timeout: float | None):
        deadline = self.timeout if timeout is None else timeout
        attempt, fresh = 0, False
        while True:
            channel = self._channel_for_call(fresh)
            call = channel.unary_unary(
                method, request_serializer=type(request).SerializeToString, response_deserializer=response_type.FromString
            )
            try:
                response = call(request, timeout=deadline, metadata=self._metadata)
            except grpc.RpcError as error:
                status, details = error.code(), error.details() or ""
                if status not in RETRIED or attempt >= self.retries:
                    raise PredictionError(
                        status, f"{method} on {self.target}: {details}{self._connection_hint(status)}"
                    ) from None
                wait = min(self.max_backoff, self.backoff * 2**attempt)
                attempt += 1
                log.warning(
                    "%s on %s: %s (%s); retry %d of %d in %.2f s",
                    method,
                    self.target,
                    status.name,
                    details,
                    attempt,
                    self.retries,
                    wait,
                )
                fresh = status is grpc.StatusCode.UNAVAILABLE  # a broken connection: reconnect from scratch
                time.sleep(wait)
                continue
            with self._lock:
                self._last_used = time.monotonic()
            return response


def _output_filter(outputs: Outputs) -> list[str]:
    """The output names to ask for; a single string is one name, never its characters."""
    if not outputs:
        return []
    return [outputs] if isinstance(outputs, str) else list(outputs)


def _select(result: dict[str, np.ndarray], outputs: Outputs) -> np.ndarray | list[np.ndarray]:
    """The answer ``outputs`` asked for: the one default output, one named output, or a list in the asked order."""
    names = _output_filter(outputs)
    missing = [name for name in names if name not in result]
    if missing or (not names and len(result) != 1):
        expected = names or "the one default output"
        raise PredictionError(grpc.StatusCode.INTERNAL, f"expected {expected}, got {sorted(result)}")
    if not names:
        return next(iter(result.values()))
    return result[names[0]] if isinstance(outputs, str) else [result[name] for name in names]


def _first(result: np.ndarray | list[np.ndarray]):
    """Remove the batch dimension of one image's result (an array or a list of arrays)."""
    if isinstance(result, list):
        return [value[0] for value in result]
    return result[0]
