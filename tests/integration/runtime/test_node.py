"""A node as a whole: health, Prometheus metrics, graceful drain, unexpected errors, API keys."""

import threading
import urllib.request
from concurrent import futures

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from fpgaflow.fpga_runtime import codec
from fpgaflow.fpga_runtime.errors import FpgaflowError, ResourceExhausted
from fpgaflow.fpga_runtime.executor import PREPROCESS, ServiceExecutor
from fpgaflow.fpga_runtime.metrics import ServerMetrics
from fpgaflow.fpga_runtime.proto import open_inference_pb2 as oip
from fpgaflow.fpga_runtime.proto import tf_serving_pb2 as tfs
from fpgaflow.fpga_runtime.rpc import unary_handler
from fpgaflow.fpga_runtime.server import ModelServer
from fpgaflow.fpga_runtime.service import load_service
from fpgaflow.fpga_runtime.settings import Settings
from tests.fixtures.wire import tf_predict, unary

TIMEOUT = 10
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _predict_request(images):
    request = tfs.PredictRequest()
    request.inputs["images"].CopyFrom(codec.numpy_to_tensor_proto(images))
    return request


def _health(channel, service=""):
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT).status


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_health_is_serving_for_the_server_and_both_apis(server, channel):
    for service in ("", "tensorflow.serving.PredictionService", "inference.GRPCInferenceService"):
        assert _health(channel, service) == SERVING


def test_health_is_not_serving_while_the_model_loads(service_dir, images):
    node = ModelServer("127.0.0.1:0")
    node.data_plane.register(load_service(service_dir))
    node.start()
    try:
        with grpc.insecure_channel(node.address) as channel:
            assert _health(channel) == NOT_SERVING
            node.data_plane.attach(ServiceExecutor(service_dir, "arria10"))
            assert _health(channel) == SERVING
            assert tf_predict(channel)(_predict_request(images[:1]), timeout=TIMEOUT).outputs["probabilities"]
    finally:
        node.stop(0).wait()


def test_metrics_count_requests_by_outcome_and_time_each_stage(server, channel, images):
    tf_predict(channel)(_predict_request(images), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError):
        tf_predict(channel)(_predict_request([b"not an image"]), timeout=TIMEOUT)
    samples = _scrape(server.metrics_port)

    def value(name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    api = {"api": "tfserving", "method": "Predict"}
    assert value("fpgaflow_requests_total", outcome="ok", code="OK", **api) >= 1
    assert value("fpgaflow_requests_total", outcome="client_error", code="INVALID_ARGUMENT", **api) >= 1
    assert value("fpgaflow_request_latency_seconds_count", **api) >= 2
    for stage in ("preprocess", "fpga", "cpu"):
        assert value("fpgaflow_stage_latency_seconds_count", model="tiny", version="7", stage=stage) >= 1
    device = {"model": "tiny", "version": "7", "profile": "arria10"}
    assert value("fpgaflow_device_runs_total", **device) >= 1
    assert 0 < value("fpgaflow_device_utilisation", **device) <= 1
    assert value("fpgaflow_device_modelled_latency_seconds", **device) > 0
    assert value("fpgaflow_server_ready") == 1


def test_stop_drains_in_flight_calls_and_refuses_new_ones(service_dir, images):
    in_flight, release = threading.Event(), threading.Event()

    def hold_after_preprocessing(kind, seconds):
        if kind == PREPROCESS:
            in_flight.set()
            release.wait(TIMEOUT)

    node = ModelServer("127.0.0.1:0")
    node.data_plane.attach(ServiceExecutor(service_dir, "arria10", on_timing=hold_after_preprocessing))
    device = node.data_plane.resolve("tiny").executor.device
    node.start()
    with grpc.insecure_channel(node.address) as channel:
        predict = tf_predict(channel)
        pending = predict.future(_predict_request(images[:1]), timeout=TIMEOUT)
        assert in_flight.wait(TIMEOUT)
        stopped = node.stop(grace=TIMEOUT)
        with pytest.raises(grpc.RpcError) as refused:
            predict(_predict_request(images[:1]), timeout=TIMEOUT)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert not stopped.is_set() and device.loaded is not None
        release.set()
        probabilities = codec.tensor_proto_to_numpy(pending.result().outputs["probabilities"])
    assert probabilities.shape == (1, 3) and np.isfinite(probabilities).all()
    assert stopped.wait(TIMEOUT)
    assert device.loaded is None


def test_unexpected_exceptions_become_internal_without_a_stack_trace():
    metrics = ServerMetrics()

    def explode(request, context):
        raise KeyError("secret/internal/path")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Exploding",
                {"Call": unary_handler("test", "Call", explode, oip.ServerLiveRequest, oip.ServerLiveResponse, metrics)},
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = unary(channel, "/test.Exploding/Call", oip.ServerLiveRequest, oip.ServerLiveResponse)
            with pytest.raises(grpc.RpcError) as raised:
                call(oip.ServerLiveRequest(), timeout=TIMEOUT)
    finally:
        server.stop(0)
    assert raised.value.code() is grpc.StatusCode.INTERNAL
    assert raised.value.details() == "internal error (KeyError); see the server log"
    labels = {"api": "test", "method": "Call", "outcome": "server_error", "code": "INTERNAL"}
    assert metrics.registry.get_sample_value("fpgaflow_requests_total", labels) == 1


def test_api_keys_are_required_except_for_health(service_dir, images):
    node = ModelServer("127.0.0.1:0", settings=Settings(server_api_keys=("primary-key", "secondary-key")))
    node.add_service(service_dir, "arria10")
    node.start()
    node.wait_until_ready(TIMEOUT)
    try:
        with grpc.insecure_channel(node.address) as channel:
            predict = tf_predict(channel)
            assert _health(channel) == SERVING
            for metadata, detail in [
                ((), "missing 'authorization: Bearer <key>'"),
                ((("authorization", "Bearer wrong"),), "not valid"),
            ]:
                with pytest.raises(grpc.RpcError) as raised:
                    predict(_predict_request(images[:1]), timeout=TIMEOUT, metadata=metadata)
                assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED and detail in raised.value.details()
            for key in ("primary-key", "secondary-key"):
                response = predict(_predict_request(images[:1]), timeout=TIMEOUT, metadata=(("authorization", f"Bearer {key}"),))
                assert "probabilities" in response.outputs
    finally:
        node.stop(0).wait()


def test_a_model_that_does_not_fit_the_device_fails_loading_with_both_sizes(service_dir, tmp_path):
    profile = tmp_path / "tiny-part.yaml"
    profile.write_text(
        "name: tiny-part\ndescription: a part with almost no on-chip memory\nonchip_memory_bytes: 64\n"
        "mac_units: {fp32: 8}\nvector_lanes: 4\nclock_hz: 100000000\nhost_link_bytes_per_second: 1000000000\n"
        "efficiency: 0.5\nsupported_formats: [fp32]\nsource: test profile\n"
    )
    node = ModelServer("127.0.0.1:0")
    node.add_service(service_dir, profile)
    node.start()
    try:
        with pytest.raises(ResourceExhausted, match=r"does not fit device tiny-part: its weights take 448 bytes.* 64 bytes"):
            node.wait_until_ready(TIMEOUT)
        with grpc.insecure_channel(node.address) as channel:
            assert _health(channel) == NOT_SERVING
            with pytest.raises(grpc.RpcError) as raised:
                tf_predict(channel)(_predict_request([b"x"]), timeout=TIMEOUT)
            assert raised.value.code() is grpc.StatusCode.INTERNAL and "failed to load" in raised.value.details()
    finally:
        node.stop(0).wait()


def test_a_port_in_use_is_refused_instead_of_shared(server):
    with pytest.raises(FpgaflowError, match=f"cannot listen on 127.0.0.1:{server.port}"):
        ModelServer(f"127.0.0.1:{server.port}")
