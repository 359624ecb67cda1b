"""Faults and load on a real cluster, loopback only, bounded in count and time.

- kill -9 a node during load: no request fails for the client (the gateway retries Predict on the
  other replica) and the supervisor starts the node again;
- kill -9 the gateway during load: its watchdog starts it again on the same address with the same
  placements, and a client that retries (as the original client did) loses no request;
- soak: 10,000 requests at concurrency 8 through the gateway, zero errors, flat memory.
"""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.fpga_runtime.cluster.processes import wait_for_exit
from fpgaflow.fpga_runtime.errors import FpgaflowError
from tests.fixtures.tiny_service import encoded_images
from tests.integration.cluster.conftest import Load, eventually, status
from tests.reliability.conftest import MODEL, rss_bytes, wait_for_replicas

pytestmark = pytest.mark.slow
SOAK_REQUESTS = 10_000
SOAK_CONCURRENCY = 8
SOAK_TIME_LIMIT_SECONDS = 240
MEMORY_TOLERANCE_BYTES = 48 * 1024 * 1024


def status_or_none(settings) -> dict | None:
    """The cluster status, or None while the gateway is down."""
    try:
        return status(settings)
    except FpgaflowError:
        return None


def client_for(settings, **options) -> PredictionClient:
    host, port = status(settings)["gateway"]["address"].rsplit(":", 1)
    return PredictionClient(host, int(port), service_name=MODEL, **options)


class RetryingLoad:
    """Scores from a thread with the client's default retries (5, back-off 1, 2, 4 ... s: the original client's),
    counting failures."""

    def __init__(self, settings, max_requests: int = 3000) -> None:
        self._client = client_for(settings, timeout=10)
        self._images = encoded_images(2)
        self._max = max_requests
        self._stop = threading.Event()
        self.succeeded = 0
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(self._max):
            if self._stop.is_set():
                return
            try:
                self._client.score_images(self._images)
                self.succeeded += 1
            except Exception as error:  # every failure is what the test counts
                self.failures.append(str(error))

    def __enter__(self) -> RetryingLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(60)
        self._client.close()


def test_a_node_killed_under_load_loses_no_request_and_is_restarted(cluster):
    before = wait_for_replicas(cluster)
    victim = next(node for node in before["nodes"] if node["model"] == MODEL)
    with Load(cluster, MODEL) as load:
        load.wait_for(50)
        os.kill(victim["pid"], signal.SIGKILL)
        assert wait_for_exit(victim["pid"], 30)
        restarted = eventually(
            lambda: next(
                (
                    node
                    for node in status(cluster)["nodes"]
                    if node["id"] == victim["id"] and node["pid"] != victim["pid"] and node["healthy"]
                ),
                None,
            ),
            what=f"{victim['id']} restarted",
        )
        wait_for_replicas(cluster)
        load.wait_for(50)
    print(
        f"node kill: {load.succeeded} requests, {len(load.failures)} failed; "
        f"{victim['id']} pid {victim['pid']} -> {restarted['pid']}"
    )
    assert load.failures == []


def test_a_killed_gateway_is_restarted_by_its_watchdog_with_its_placements(cluster):
    before = wait_for_replicas(cluster)
    with RetryingLoad(cluster) as load:
        eventually(lambda: load.succeeded >= 20, what="20 requests before the kill")
        os.kill(before["gateway"]["pid"], signal.SIGKILL)
        assert wait_for_exit(before["gateway"]["pid"], 30)
        after = eventually(
            lambda: (
                lambda s: (
                    s
                    if s
                    and s["gateway"]["pid"] != before["gateway"]["pid"]
                    and s["models"]
                    and s["models"][0]["healthy_replicas"] == 2
                    else None
                )
            )(status_or_none(cluster)),
            what="the gateway restarted with both replicas healthy",
        )
        served_before_kill_and_after = load.succeeded
        eventually(lambda: load.succeeded >= served_before_kill_and_after + 20, what="20 requests after the restart")
    print(
        f"gateway kill: {load.succeeded} requests, {len(load.failures)} failed; "
        f"pid {before['gateway']['pid']} -> {after['gateway']['pid']}"
    )
    assert after["gateway"]["address"] == before["gateway"]["address"]
    assert after["gateway"]["watchdog_pid"] == before["gateway"]["watchdog_pid"] is not None
    assert [(node["id"], node["pid"], node["model"]) for node in after["nodes"]] == [
        (node["id"], node["pid"], node["model"]) for node in before["nodes"]
    ]

    def placements(current: dict) -> list:
        return [(m["name"], m["version"], [(p["version"], p["nodes"]) for p in m["placement"]]) for m in current["models"]]

    assert placements(after) == placements(before)
    assert load.failures == []


def test_soak_ten_thousand_requests_at_concurrency_eight_without_error_or_memory_growth(cluster):
    current = wait_for_replicas(cluster)
    pids = {"gateway": current["gateway"]["pid"], **{node["id"]: node["pid"] for node in current["nodes"]}}
    images = encoded_images(4)
    clients = [client_for(cluster, retries=0, timeout=30) for _ in range(SOAK_CONCURRENCY)]
    stop = threading.Event()
    timer = threading.Timer(SOAK_TIME_LIMIT_SECONDS, stop.set)

    def worker(index: int, count: int) -> tuple[int, list[str]]:
        done, errors = 0, []
        for request in range(count):
            if stop.is_set():
                break
            try:
                clients[index].score_image(images[(index + request) % len(images)])
                done += 1
            except Exception as error:  # every failure is what the test counts
                errors.append(str(error))
        return done, errors

    def run(total: int) -> tuple[int, list[str]]:
        share = total // SOAK_CONCURRENCY
        with ThreadPoolExecutor(SOAK_CONCURRENCY) as pool:
            results = list(pool.map(worker, range(SOAK_CONCURRENCY), [share] * SOAK_CONCURRENCY))
        return sum(done for done, _ in results), [error for _, errors in results for error in errors]

    timer.start()
    try:
        run(400)  # warm-up: channels, thread pools, allocator
        before = {name: rss_bytes(pid) for name, pid in pids.items()}
        done, errors = run(SOAK_REQUESTS)
        after = {name: rss_bytes(pid) for name, pid in pids.items()}
    finally:
        timer.cancel()
        for client in clients:
            client.close()
    growth = {name: after[name] - before[name] for name in pids}
    print(f"soak: {done} requests at concurrency {SOAK_CONCURRENCY}, {len(errors)} errors; RSS before {before}, growth {growth}")
    assert errors == []
    assert done == SOAK_REQUESTS, f"only {done} requests within {SOAK_TIME_LIMIT_SECONDS} s"
    assert all(value < MEMORY_TOLERANCE_BYTES for value in growth.values()), growth
