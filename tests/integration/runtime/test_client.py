"""PredictionClient against real nodes: results, retries, deadlines, idle channels, API keys."""

import logging
import socket
import threading

import grpc
import numpy as np
import pytest

from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.fpga_runtime.errors import PredictionError
from fpgaflow.fpga_runtime.executor import PREPROCESS, ServiceExecutor
from fpgaflow.fpga_runtime.preprocessing import preprocess
from fpgaflow.fpga_runtime.server import ModelServer, create_server
from fpgaflow.fpga_runtime.service import load_service
from fpgaflow.fpga_runtime.settings import Settings
from tests.fixtures.tiny_service import CLASS_NAMES, reference_probabilities

TIMEOUT = 10


class RetryLog(logging.Handler):
    """Collects the client's retry warnings; ``first`` is set by the first one."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self.first = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.first.set()


@pytest.fixture()
def retry_log():
    handler = RetryLog()
    logger = logging.getLogger("fpgaflow.fpga_runtime.client")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture()
def client(server):
    with PredictionClient("127.0.0.1", server.port, timeout=TIMEOUT) as opened:
        yield opened


def _invalid_argument_count(server) -> float:
    labels = {"api": "tfserving", "method": "Predict", "outcome": "client_error", "code": "INVALID_ARGUMENT"}
    return server.metrics.registry.get_sample_value("fpgaflow_requests_total", labels) or 0.0


def test_scores_equal_the_onnx_stages(client, service_dir, images, tmp_path):
    expected = reference_probabilities(service_dir, images)
    path = tmp_path / "photo.jpg"
    path.write_bytes(images[0])
    np.testing.assert_allclose(client.score_file(path), expected[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(client.score_image(images[1]), expected[1], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(client.score_images(images), expected, rtol=1e-6, atol=1e-7)
    spec = load_service(service_dir).preprocessing
    batch = np.stack([preprocess(data, spec) for data in images])
    np.testing.assert_allclose(client.score_numpy_array(batch[2]), expected[2], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(client.score_numpy_array(batch), expected, rtol=1e-6, atol=1e-7)


def test_named_outputs_come_back_as_a_list_in_order_without_the_batch_dimension(client, service_dir, images):
    result = client.score_image(images[0], outputs=["class_names", "classes"])
    top = int(reference_probabilities(service_dir, images[:1]).argmax())
    assert result == [CLASS_NAMES[top].encode(), top]
    assert client.score_image(images[0], outputs="classes") == top


def test_top_k_uses_the_class_names_from_metadata(client, images):
    probabilities = client.score_image(images[0])
    top = client.top_k(probabilities, k=2)
    assert client.class_names() == CLASS_NAMES
    assert [name for name, _ in top] == [CLASS_NAMES[i] for i in np.argsort(-probabilities)[:2]]
    assert top[0][1] == pytest.approx(float(probabilities.max()))
    assert set(client.signature().inputs) == {"images", "input"}


def test_errors_carry_the_status_and_are_not_retried(server, retry_log, images):
    before = _invalid_argument_count(server)
    with (
        PredictionClient("127.0.0.1", server.port, retries=5, backoff=0.01) as client,
        pytest.raises(PredictionError) as raised,
    ):
        client.score_image(b"not an image")
    assert raised.value.status is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a decodable image" in str(raised.value)
    assert _invalid_argument_count(server) == before + 1
    assert retry_log.records == []
    with (
        PredictionClient("127.0.0.1", server.port, service_name="resnet") as client,
        pytest.raises(PredictionError) as raised,
    ):
        client.score_image(images[0])
    assert raised.value.status is grpc.StatusCode.NOT_FOUND


def test_retries_until_a_server_that_starts_later_answers(service_dir, images, retry_log):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results: dict = {}

    def score() -> None:
        with PredictionClient("127.0.0.1", port, retries=10, backoff=0.02, max_backoff=0.5, timeout=TIMEOUT) as client:
            try:
                results["probabilities"] = client.score_image(images[0])
            except PredictionError as error:
                results["error"] = error

    caller = threading.Thread(target=score)
    caller.start()
    assert retry_log.first.wait(TIMEOUT), "the client never retried"
    node, _ = create_server(service_dir, f"127.0.0.1:{port}", device_profile="arria10")
    node.start()
    try:
        caller.join(TIMEOUT * 2)
        assert "error" not in results, results.get("error")
        np.testing.assert_allclose(results["probabilities"], reference_probabilities(service_dir, images[:1])[0], rtol=1e-6)
        assert all("UNAVAILABLE" in record.getMessage() for record in retry_log.records)
    finally:
        node.stop(0).wait()


def test_every_attempt_has_a_deadline_and_deadline_exceeded_is_retried(service_dir, images, retry_log):
    release = threading.Event()
    node = ModelServer("127.0.0.1:0")
    node.data_plane.attach(
        ServiceExecutor(service_dir, "arria10", on_timing=lambda kind, _: release.wait(TIMEOUT) if kind == PREPROCESS else None)
    )
    node.start()
    try:
        with (
            PredictionClient("127.0.0.1", node.port, timeout=0.3, retries=1, backoff=0.01) as client,
            pytest.raises(PredictionError) as raised,
        ):
            client.score_image(images[0])
        assert raised.value.status is grpc.StatusCode.DEADLINE_EXCEEDED
        assert len(retry_log.records) == 1 and "DEADLINE_EXCEEDED" in retry_log.records[0].getMessage()
    finally:
        release.set()
        node.stop(0).wait()


def test_a_channel_idle_longer_than_the_shutdown_timeout_is_rebuilt(server, images):
    with PredictionClient("127.0.0.1", server.port, channel_shutdown_timeout=120) as client:
        client.score_image(images[0])
        client.score_image(images[1])
        assert client.channels_opened == 1
    with PredictionClient("127.0.0.1", server.port, channel_shutdown_timeout=0) as client:
        client.score_image(images[0])
        client.score_image(images[1])
        assert client.channels_opened == 2


def test_the_access_token_is_sent_as_bearer_metadata(service_dir, images):
    node = ModelServer("127.0.0.1:0", settings=Settings(server_api_keys=("key-1",)))
    node.add_service(service_dir, "arria10")
    node.start()
    node.wait_until_ready(TIMEOUT)
    try:
        with PredictionClient("127.0.0.1", node.port, access_token="key-1") as client:
            assert client.score_image(images[0]).shape == (len(CLASS_NAMES),)
        with PredictionClient("127.0.0.1", node.port) as client, pytest.raises(PredictionError) as raised:
            client.score_image(images[0])
        assert raised.value.status is grpc.StatusCode.UNAUTHENTICATED
    finally:
        node.stop(0).wait()


def test_bad_client_arguments_are_refused():
    with pytest.raises(ValueError, match="timeout must be positive"):
        PredictionClient("127.0.0.1", 1, timeout=0)
    with pytest.raises(ValueError, match="retries must be 0 or more"):
        PredictionClient("127.0.0.1", 1, retries=-1)
    with pytest.raises(TypeError, match="use score_image for one"):
        PredictionClient("127.0.0.1", 1).score_images(b"\xff\xd8")
