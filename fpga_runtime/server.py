"""One node: the TF Serving, Open Inference Protocol and health gRPC services on one port.

``create_server(service_dir, "127.0.0.1:0") -> (server, port)`` binds (port 0 = a free port);
``server.start()`` starts answering and loads the model in the background (health says
NOT_SERVING and predictions get UNAVAILABLE until it is loaded); ``server.wait_until_ready()``;
``server.stop(grace).wait()`` stops taking calls, lets in-flight ones finish for up to ``grace``
seconds and releases the device.
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fpgaflow.fpga_runtime import kserve, tfserving
from fpgaflow.fpga_runtime.cluster.security import node_api_keys, node_credentials
from fpgaflow.fpga_runtime.dataplane import DataPlane
from fpgaflow.fpga_runtime.errors import FpgaflowError
from fpgaflow.fpga_runtime.metrics import ServerMetrics
from fpgaflow.fpga_runtime.protocol import OIP_SERVICE, TF_SERVICE
from fpgaflow.fpga_runtime.rpc import ApiKeyInterceptor
from fpgaflow.fpga_runtime.service import ServiceDefinition, load_service
from fpgaflow.fpga_runtime.settings import Settings, get_settings

log = logging.getLogger(__name__)
OVERALL = ""  # the health service name that stands for the whole server


def publish_readiness(ready: bool, health_servicer: health.HealthServicer, metrics: ServerMetrics) -> None:
    """Readiness as gRPC health (the server and both APIs) and as the ``ready`` gauge."""
    metrics.ready.set(1 if ready else 0)
    status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in (OVERALL, TF_SERVICE, OIP_SERVICE):
        health_servicer.set(name, status)


def grpc_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # gRPC shares ports by default; a second node on a busy port must fail, not split its traffic.
        ("grpc.so_reuseport", 0),
    ]


class ModelServer:
    """A gRPC server over one :class:`DataPlane`, with health and (optionally) /metrics."""

    def __init__(
        self, address: str = "127.0.0.1:0", *, metrics_port: int | None = None, settings: Settings | None = None
    ) -> None:
        self.settings = settings or get_settings()
        self.metrics = ServerMetrics()
        self.data_plane = DataPlane(on_timing=self.metrics.stage_observer)
        self.metrics.watch_devices(self.data_plane.device_stats)
        self.health = health.HealthServicer()
        keys = node_api_keys(self.settings)
        credentials = node_credentials(self.settings)
        self.tls = credentials is not None
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.settings.server_workers, thread_name_prefix="fpgaflow-grpc"),
            handlers=[
                tfserving.generic_handler(self.data_plane, self.metrics),
                kserve.generic_handler(self.data_plane, self.metrics),
            ],
            interceptors=[ApiKeyInterceptor(keys)] if keys else None,
            options=grpc_options(self.settings.server_max_message_bytes),
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        self.host = address.rsplit(":", 1)[0]
        self.port = _listen(self._server, address, credentials)
        self._health_server: grpc.Server | None = None
        self.health_port: int | None = None
        if self.settings.server_health_port is not None:
            self._health_server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="fpgaflow-health"),
                options=grpc_options(self.settings.server_max_message_bytes),
            )
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
            self.health_port = _listen(self._health_server, f"{self.host}:{self.settings.server_health_port}", None)
        self._metrics_port_wanted = metrics_port
        self.metrics_port: int | None = None
        self._pending: list[tuple[Path, str | Path | None, int | None]] = []
        self._loaded = threading.Event()
        self._load_errors: list[BaseException] = []
        self.data_plane.subscribe(self._publish_readiness)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def add_service(
        self, service_dir: str | Path, device_profile: str | Path | None = None, max_devices: int | None = None
    ) -> ServiceDefinition:
        """Announce a service now (its metadata is served, it is not ready); it loads on :meth:`start`, over at
        most ``max_devices`` emulated devices (default: as many as its FPGA stage needs)."""
        service = load_service(service_dir)
        self.data_plane.register(service)
        self._pending.append((Path(service_dir), device_profile, max_devices))
        return service

    def start(self) -> None:
        if self._metrics_port_wanted is not None:
            self.metrics_port = self.metrics.serve_http(self.host, self._metrics_port_wanted)
        self._server.start()
        if self._health_server is not None:
            self._health_server.start()
        threading.Thread(target=self._load_pending, name="fpgaflow-load", daemon=True).start()

    def wait_until_ready(self, timeout: float | None = None) -> None:
        """Block until every added service is loaded; raise the first loading error, or TimeoutError."""
        if not self._loaded.wait(timeout):
            raise TimeoutError(f"the models of {self.address} did not load within {timeout} s")
        if self._load_errors:
            raise self._load_errors[0]

    def stop(self, grace: float | None = None) -> threading.Event:
        """Refuse new calls now, let in-flight calls finish for up to ``grace`` s, then release everything.

        Returns at once; the event is set when the last call has finished and the device is released.
        """
        grace = self.settings.server_shutdown_grace_seconds if grace is None else grace
        self.health.enter_graceful_shutdown()
        drained = self._server.stop(grace)
        if self._health_server is not None:
            self._health_server.stop(grace)
        stopped = threading.Event()

        def release_when_drained() -> None:
            drained.wait()
            self.metrics.stop_http()
            self.data_plane.close()
            stopped.set()

        threading.Thread(target=release_when_drained, name="fpgaflow-stop", daemon=True).start()
        return stopped

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self._server.wait_for_termination(timeout)

    def _load_pending(self) -> None:
        for service_dir, device_profile, max_devices in self._pending:
            try:
                self.data_plane.load(service_dir, device_profile, max_devices=max_devices)
            except Exception as error:  # reported by wait_until_ready and the health service
                log.error("loading %s failed: %s", service_dir, error)
                self._load_errors.append(error)
        self._pending.clear()
        self._loaded.set()

    def _publish_readiness(self) -> None:
        publish_readiness(self.data_plane.ready(), self.health, self.metrics)


def _listen(server: grpc.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError as error:
        raise FpgaflowError(f"cannot listen on {address}: {error}") from None


def create_server(
    service_dir: str | Path,
    address: str = "127.0.0.1:0",
    *,
    device_profile: str | Path | None = None,
    metrics_port: int | None = None,
    settings: Settings | None = None,
    max_devices: int | None = None,
) -> tuple[ModelServer, int]:
    """A node for one service directory, bound but not started: ``(server, port)``."""
    server = ModelServer(address, metrics_port=metrics_port, settings=settings)
    server.add_service(service_dir, device_profile, max_devices)
    return server, server.port
