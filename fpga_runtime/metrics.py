"""Prometheus metrics of one node, in a registry of its own (several servers can share a process).

- ``fpgaflow_requests_total{api, method, outcome, code}``: finished gRPC calls; outcome is
  ``ok``, ``client_error`` (the request was at fault) or ``server_error``.
- ``fpgaflow_request_latency_seconds{api, method}``: whole-call latency.
- ``fpgaflow_stage_latency_seconds{model, version, stage}``: time in preprocess, fpga, cpu work.
- ``fpgaflow_device_*{model, version, profile}``: runs, busy seconds, utilisation and measured
  vs. modelled latency of each model's emulated device, read at scrape time.
- ``fpgaflow_server_ready``: 1 once every model is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

from fpgaflow.fpga_runtime.device import DeviceStats

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CLIENT_ERRORS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.CANCELLED,
    }
)
DeviceSource = Callable[[], Iterable[tuple[str, str, DeviceStats]]]


def outcome_of(code: grpc.StatusCode) -> str:
    if code is grpc.StatusCode.OK:
        return "ok"
    return "client_error" if code in CLIENT_ERRORS else "server_error"


class _DeviceCollector(Collector):
    def __init__(self, source: DeviceSource) -> None:
        self._source = source

    def collect(self):
        labels = ["model", "version", "profile"]
        runs = CounterMetricFamily("fpgaflow_device_runs", "Batches the device ran since its model was loaded.", labels=labels)
        busy = CounterMetricFamily("fpgaflow_device_busy_seconds", "Time the device spent running batches.", labels=labels)
        utilisation = GaugeMetricFamily(
            "fpgaflow_device_utilisation", "Busy time / wall time since the model was loaded (0-1).", labels=labels
        )
        measured = GaugeMetricFamily(
            "fpgaflow_device_last_latency_seconds", "Measured wall time of the last device run.", labels=labels
        )
        modelled = GaugeMetricFamily(
            "fpgaflow_device_modelled_latency_seconds", "Latency the device model predicts for one image.", labels=labels
        )
        for model, version, stats in self._source():
            values = [model, version, stats.profile]
            runs.add_metric(values, stats.runs)
            busy.add_metric(values, stats.busy_seconds)
            utilisation.add_metric(values, stats.utilisation)
            if stats.last_latency_seconds is not None:
                measured.add_metric(values, stats.last_latency_seconds)
            if stats.modelled_latency_seconds is not None:
                modelled.add_metric(values, stats.modelled_latency_seconds)
        yield from (runs, busy, utilisation, measured, modelled)


class ServerMetrics:
    """The metrics of one server; ``serve_http`` exposes them on /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fpgaflow_requests", "Finished gRPC calls.", ["api", "method", "outcome", "code"], registry=self.registry
        )
        self.request_latency = Histogram(
            "fpgaflow_request_latency_seconds",
            "Latency of gRPC calls.",
            ["api", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_latency = Histogram(
            "fpgaflow_stage_latency_seconds",
            "Time one request spends in each kind of work (preprocess, fpga, cpu).",
            ["model", "version", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ready = Gauge("fpgaflow_server_ready", "1 when every model of the server is loaded.", registry=self.registry)
        self._http: WSGIServer | None = None

    def record_call(self, api: str, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.requests.labels(api, method, outcome_of(code), code.name).inc()
        self.request_latency.labels(api, method).observe(seconds)

    def stage_observer(self, model: str, version: str) -> Callable[[str, float], None]:
        """The ``on_timing`` callback of one model's executor."""

        def observe(stage: str, seconds: float) -> None:
            self.stage_latency.labels(model, version, stage).observe(seconds)

        return observe

    def watch_devices(self, source: DeviceSource) -> None:
        """Export the device statistics ``source()`` returns, read at every scrape."""
        self.registry.register(_DeviceCollector(source))

    def serve_http(self, host: str, port: int) -> int:
        """Start /metrics on ``host:port`` (0 = a free port) and return the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return server.server_port

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
