"""The cluster gateway: the same gRPC APIs as a node (TF Serving, Open Inference Protocol, health).

Predict and ModelInfer are forwarded to a replica of the named model as the bytes the client sent
(only the model name and version are read from them); every other method is answered here by the
very servicers a node uses, over :class:`RoutingDataPlane`, a data plane that knows the placed
models' service definitions and routes instead of computing. A node's error reaches the client
with the node's status and message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from fpgaflow.fpga_runtime import kserve, tfserving
from fpgaflow.fpga_runtime.cluster.router import Router
from fpgaflow.fpga_runtime.cluster.security import accepted_api_keys, server_credentials
from fpgaflow.fpga_runtime.dataplane import DataPlane
from fpgaflow.fpga_runtime.errors import FpgaflowError, InvalidInput
from fpgaflow.fpga_runtime.metrics import ServerMetrics
from fpgaflow.fpga_runtime.proto import open_inference_pb2 as oip_pb
from fpgaflow.fpga_runtime.proto import tf_serving_pb2 as tf_pb
from fpgaflow.fpga_runtime.protocol import AUTHORIZATION_METADATA, OIP_SERVICE, TF_PREDICT, TF_SERVICE, oip_method
from fpgaflow.fpga_runtime.rpc import ApiKeyInterceptor, unary_handler
from fpgaflow.fpga_runtime.server import grpc_options, publish_readiness
from fpgaflow.fpga_runtime.service import ServiceDefinition
from fpgaflow.fpga_runtime.settings import Settings, get_settings
from fpgaflow.fpga_runtime.tls import is_loopback

log = logging.getLogger(__name__)
# A call without a deadline reports one far in the future; beyond this, the forwarding default applies.
NO_DEADLINE_SECONDS = 24 * 3600.0
LENGTH_DELIMITED = 2


class RawBytes:
    """Stands in for a message type where a call passes through: (de)serializes bytes as themselves."""

    FromString = staticmethod(lambda data: data)
    SerializeToString = staticmethod(lambda data: data)


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise InvalidInput("malformed request: truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def length_delimited_fields(data: bytes, numbers: frozenset[int]) -> dict[int, bytes]:
    """The top-level length-delimited fields ``numbers`` of a serialized message (the last occurrence wins).

    Reads field headers only and skips everything else, so the tensors of a request are never decoded.
    """
    view = memoryview(data)
    found: dict[int, bytes] = {}
    position = 0
    while position < len(view):
        key, position = _varint(view, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, position = _varint(view, position)
        elif wire_type == 1:
            position += 8
        elif wire_type == 5:
            position += 4
        elif wire_type == LENGTH_DELIMITED:
            length, position = _varint(view, position)
            if number in numbers:
                found[number] = bytes(view[position : position + length])
            position += length
        else:
            raise InvalidInput(f"malformed request: unsupported wire type {wire_type}")
        if position > len(view):
            raise InvalidInput("malformed request: a field runs past the end of the message")
    return found


_TF_MODEL_SPEC = tf_pb.PredictRequest.DESCRIPTOR.fields_by_name["model_spec"].number
_OIP_NAME = oip_pb.ModelInferRequest.DESCRIPTOR.fields_by_name["model_name"].number
_OIP_VERSION = oip_pb.ModelInferRequest.DESCRIPTOR.fields_by_name["model_version"].number


def predict_target(request: bytes) -> tuple[str, str]:
    """(model name, version) of a serialized TF Serving PredictRequest."""
    fields = length_delimited_fields(request, frozenset({_TF_MODEL_SPEC}))
    spec = tf_pb.ModelSpec.FromString(fields.get(_TF_MODEL_SPEC, b""))
    return spec.name, tfserving.requested_version(spec)


def model_infer_target(request: bytes) -> tuple[str, str]:
    """(model name, version) of a serialized Open Inference Protocol ModelInferRequest."""
    fields = length_delimited_fields(request, frozenset({_OIP_NAME, _OIP_VERSION}))
    return fields.get(_OIP_NAME, b"").decode("utf-8", "replace"), fields.get(_OIP_VERSION, b"").decode("utf-8", "replace")


class RoutingDataPlane(DataPlane):
    """The gateway's data plane: the placed versions' metadata; a model is ready while a replica is healthy."""

    def __init__(self, router: Router) -> None:
        super().__init__()
        self.router = router

    def forget(self, name: str, version: str) -> None:
        with self._lock:
            self._models.pop((name, version), None)
        self._changed()

    def ready(self) -> bool:
        names = self.model_names()
        return bool(names) and all(self.router.has_healthy(name) for name in names)

    def model_ready(self, name: str, version: str = "") -> bool:
        return self.router.has_healthy(self.resolve(name, version).service.name, version)

    def changed(self) -> None:
        self._changed()


class Gateway:
    """The gateway's gRPC server: ``start()``, ``publish(service)`` for metadata, ``router`` for replicas."""

    def __init__(self, address: str = "127.0.0.1:0", settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.metrics = ServerMetrics()
        self.router = Router(self.settings, on_change=self._routes_changed)
        self.data_plane = RoutingDataPlane(self.router)
        self.health = health.HealthServicer()
        self.api_keys = ApiKeyInterceptor(accepted_api_keys(self.settings))
        credentials = server_credentials(self.settings)
        self.tls = credentials is not None
        self.host = address.rsplit(":", 1)[0]
        if not self.tls and not is_loopback(self.host):
            raise FpgaflowError(
                f"the gateway refuses to listen on {self.host} without TLS: only loopback may be served in plaintext; "
                "set gateway_tls_cert_file and gateway_tls_key_file (FPGAFLOW_GATEWAY_TLS_CERT_FILE, "
                "FPGAFLOW_GATEWAY_TLS_KEY_FILE), or bind 127.0.0.1"
            )
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.settings.server_workers, thread_name_prefix="fpgaflow-gateway"),
            handlers=[self._tf_serving_handler(), self._kserve_handler()],
            interceptors=[self.api_keys],
            options=grpc_options(self.settings.server_max_message_bytes),
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        try:
            if credentials is None:
                self.port = self._server.add_insecure_port(address)
            else:
                self.port = self._server.add_secure_port(address, credentials)
        except RuntimeError as error:
            raise FpgaflowError(f"the gateway cannot listen on {address}: {error}") from None
        self.data_plane.subscribe(self._publish_readiness)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        self.router.start()
        self._server.start()

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish for up to ``grace`` seconds, close the routes."""
        grace = self.settings.server_shutdown_grace_seconds if grace is None else grace
        self.health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        self.router.close()

    def reload_api_keys(self) -> dict:
        """Accept the keys of the settings and the key file as they are now (rotation); a bad file keeps the old keys."""
        keys = accepted_api_keys(self.settings)
        self.api_keys.replace(keys)
        log.info("API keys reloaded: %d key(s) accepted", len(keys))
        return {"api_keys": len(keys)}

    def publish(self, service: ServiceDefinition) -> None:
        """Serve the metadata of a placed version."""
        self.data_plane.register(service)

    def forget(self, name: str, version: str) -> None:
        self.data_plane.forget(name, version)

    # -- handlers --------------------------------------------------------------------------------

    def _forwarder(self, api: str, method: str, path: str, target_of: Callable[[bytes], tuple[str, str]]):
        def forward(request: bytes, context: grpc.ServicerContext) -> bytes:
            model, version = target_of(request)
            if not model:
                model = self.data_plane.resolve("").service.name
            remaining = context.time_remaining()
            timeout = remaining if remaining is not None and remaining < NO_DEADLINE_SECONDS else None
            metadata = [(key, value) for key, value in context.invocation_metadata() if key == AUTHORIZATION_METADATA]
            return self.router.forward(path, request, model, version, timeout, metadata)

        return unary_handler(api, method, forward, RawBytes, RawBytes, self.metrics)

    def _tf_serving_handler(self) -> grpc.GenericRpcHandler:
        servicer = tfserving.TfServingServicer(self.data_plane)
        return grpc.method_handlers_generic_handler(
            TF_SERVICE,
            {
                "Predict": self._forwarder(tfserving.API, "Predict", TF_PREDICT, predict_target),
                "GetModelMetadata": unary_handler(
                    tfserving.API,
                    "GetModelMetadata",
                    servicer.get_model_metadata,
                    tf_pb.GetModelMetadataRequest,
                    tf_pb.GetModelMetadataResponse,
                    self.metrics,
                ),
            },
        )

    def _kserve_handler(self) -> grpc.GenericRpcHandler:
        servicer = kserve.InferenceServicer(self.data_plane)
        handlers = {
            method: unary_handler(kserve.API, method, getattr(servicer, attribute), request_type, response_type, self.metrics)
            for method, attribute, request_type, response_type in kserve.METHODS
        }
        handlers["ModelInfer"] = self._forwarder(kserve.API, "ModelInfer", oip_method("ModelInfer"), model_infer_target)
        return grpc.method_handlers_generic_handler(OIP_SERVICE, handlers)

    # -- health ----------------------------------------------------------------------------------

    def _routes_changed(self) -> None:
        self.data_plane.changed()

    def _publish_readiness(self) -> None:
        publish_readiness(self.data_plane.ready(), self.health, self.metrics)
