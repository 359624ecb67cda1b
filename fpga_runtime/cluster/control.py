"""How commands reach the cluster: a small JSON-over-gRPC control service on the gateway's loopback port.

Methods of ``fpgaflow.cluster.Control`` (request and response are JSON objects):
``Status {}``, ``Deploy {service_dir, replicas, image}``, ``Undeploy {name}``,
``Scale {name, replicas}``, ``Shutdown {}``, ``ReloadKeys {}`` (the gateway's API keys read again). Errors come
back as gRPC statuses from :mod:`fpgaflow.fpga_runtime.errors` and are raised again on the client side with the
same status and message.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc

from fpgaflow.fpga_runtime.cluster.controller import Controller
from fpgaflow.fpga_runtime.cluster.gateway import RawBytes
from fpgaflow.fpga_runtime.errors import InvalidInput, UpstreamError
from fpgaflow.fpga_runtime.metrics import ServerMetrics
from fpgaflow.fpga_runtime.rpc import unary_handler

CONTROL_SERVICE = "fpgaflow.cluster.Control"
API = "control"
STATUS_TIMEOUT_SECONDS = 30.0


def control_handler(controller: Controller, on_shutdown: Callable[[], None], metrics: ServerMetrics) -> grpc.GenericRpcHandler:
    def shutdown() -> dict:
        result = controller.shutdown()
        on_shutdown()
        return result

    operations: dict[str, Callable[..., dict]] = {
        "Status": controller.status,
        "Deploy": controller.deploy,
        "Undeploy": controller.undeploy,
        "Scale": controller.scale,
        "Shutdown": shutdown,
        "ReloadKeys": controller.gateway.reload_api_keys,
    }

    def json_behaviour(method: str, operation: Callable[..., dict]):
        def behaviour(request: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                arguments = json.loads(request or b"{}")
            except ValueError as error:
                raise InvalidInput(f"{method}: the request is not JSON: {error}") from None
            if not isinstance(arguments, dict):
                raise InvalidInput(f"{method}: the request must be a JSON object")
            try:
                result = operation(**arguments)
            except TypeError as error:
                raise InvalidInput(f"{method}: {error}") from None
            return json.dumps(result).encode("utf-8")

        return behaviour

    return grpc.method_handlers_generic_handler(
        CONTROL_SERVICE,
        {
            method: unary_handler(API, method, json_behaviour(method, operation), RawBytes, RawBytes, metrics)
            for method, operation in operations.items()
        },
    )


class ClusterClient:
    """Calls the control service of a running gateway."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel = grpc.insecure_channel(address)

    def status(self) -> dict:
        return self._call("Status", {}, STATUS_TIMEOUT_SECONDS)

    def deploy(self, service_dir: str, replicas: int, image: str | None = None) -> dict:
        return self._call("Deploy", {"service_dir": str(service_dir), "replicas": replicas, "image": image})

    def undeploy(self, name: str) -> dict:
        return self._call("Undeploy", {"name": name})

    def scale(self, name: str, replicas: int) -> dict:
        return self._call("Scale", {"name": name, "replicas": replicas})

    def shutdown(self) -> dict:
        return self._call("Shutdown", {})

    def reload_keys(self) -> dict:
        return self._call("ReloadKeys", {})

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ClusterClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _call(self, method: str, arguments: dict, timeout: float | None = None) -> dict:
        call = self._channel.unary_unary(f"/{CONTROL_SERVICE}/{method}")
        try:
            response = call(json.dumps(arguments).encode("utf-8"), timeout=timeout)
        except grpc.RpcError as error:
            details = error.details() or error.code().name
            if error.code() is grpc.StatusCode.UNAVAILABLE:
                details = f"the cluster gateway (control {self.address}) did not answer {method}: {details}"
            raise UpstreamError(error.code(), details) from None
        return json.loads(response)
