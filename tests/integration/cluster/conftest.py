"""Real clusters for the tests: a gateway process and node processes (or containers), always cleaned up."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.fpga_runtime.cluster.daemon import cluster_client, kill_gateway, start_gateway, stop_cluster
from fpgaflow.fpga_runtime.cluster.processes import terminate
from fpgaflow.fpga_runtime.cluster.state import StateStore, cluster_dir
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.docker_engine import docker_client, image_home, local_base_image  # noqa: F401  (session fixtures)
from tests.fixtures.tiny_service import encoded_images
from tests.fixtures.wire import kserve_probabilities

WAIT_SECONDS = 60


def eventually(predicate: Callable[[], object], timeout: float = WAIT_SECONDS, what: str = "the condition"):
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        pause.wait(0.1)


def kill_leftovers(settings: PipelineSettings) -> None:
    """Whatever a failed test left running: the gateway and every node process of the saved state."""
    state = StateStore(cluster_dir(settings)).load()
    if state is None:
        return
    for node in state.nodes:
        terminate(node.pid, 0)
    if state.gateway is not None:
        kill_gateway(state.gateway)


@contextmanager
def running_cluster(home: Path, nodes: int, device: str | None = None, target: str = "local") -> Iterator[PipelineSettings]:
    settings = PipelineSettings(home=home)
    start_gateway(settings, nodes=nodes, device=device, target=target, port=0)
    try:
        yield settings
    finally:
        try:
            stop_cluster(settings)
        finally:
            kill_leftovers(settings)


def status(settings: PipelineSettings) -> dict:
    with cluster_client(settings) as client:
        return client.status()


def gateway_client(settings: PipelineSettings, model: str = "", **options) -> PredictionClient:
    host, port = status(settings)["gateway"]["address"].rsplit(":", 1)
    return PredictionClient(host, int(port), service_name=model, retries=0, timeout=30, **options)


def assert_both_apis_answer(settings: PipelineSettings, model: str, images: list[bytes], expected: np.ndarray) -> None:
    """The gateway answers ``expected`` for ``images`` over TF Serving Predict and over KServe v2 ModelInfer."""
    with gateway_client(settings) as scorer:
        np.testing.assert_allclose(scorer.score_images(images), expected, rtol=1e-5, atol=1e-6)
    gateway = status(settings)["gateway"]["address"]
    np.testing.assert_allclose(kserve_probabilities(gateway, model, images), expected, rtol=1e-5, atol=1e-6)


class Load:
    """Scores images through the gateway from a thread, without client retries, counting every failure."""

    def __init__(
        self,
        settings: PipelineSettings,
        model: str,
        max_requests: int = 5000,
        request: Callable[[PredictionClient, list[bytes]], object] = PredictionClient.score_images,
    ) -> None:
        """``request`` is the call each request makes (``PredictionClient.detect_images`` for a detector)."""
        self._client = gateway_client(settings, model)
        self._request = request
        self._images = encoded_images(2)
        self._max = max_requests
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self.succeeded = 0
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(self._max):
            if self._stop.is_set():
                break
            try:
                self._request(self._client, self._images)
                outcome = None
            except Exception as error:  # every failure is what the test counts
                outcome = str(error)
            with self._progress:
                if outcome is None:
                    self.succeeded += 1
                else:
                    self.failures.append(outcome)
                self._progress.notify_all()
        with self._progress:
            self._stop.set()
            self._progress.notify_all()

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self._client.close()

    def wait_for(self, more: int, timeout: float = WAIT_SECONDS) -> None:
        """Block until ``more`` further requests succeeded."""
        with self._progress:
            target = self.succeeded + more
            if not self._progress.wait_for(lambda: self.succeeded >= target or self._stop.is_set(), timeout):
                pytest.fail(f"the load did not reach {target} successful requests within {timeout} s")
            if self.succeeded < target:
                pytest.fail(f"the load stopped after {self.succeeded} requests; failures: {self.failures[:3]}")
