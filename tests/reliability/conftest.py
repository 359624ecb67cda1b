"""A real cluster for the reliability suite: gateway (under its watchdog) + two node processes, loopback only.

``tiny`` (the small service of tests/fixtures) runs on both nodes, so a killed node leaves a
replica. Helpers read a process's resident memory from /proc and open raw channels to the gateway
and to a node, the way any client in any language reaches them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import grpc
import pytest

from fpgaflow.fpga_runtime.cluster.daemon import cluster_client
from tests.fixtures.tiny_service import write_tiny_service
from tests.integration.cluster.conftest import eventually, running_cluster, status

MODEL = "tiny"
VERSION = "7"
MAX_MESSAGE_BYTES = 1024 * 1024  # small, so "oversized" requests stay cheap to make
MAX_BATCH = 8


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def healthy_replicas(settings, model: str = MODEL) -> int:
    models = [entry for entry in status(settings)["models"] if entry["name"] == model]
    return models[0]["healthy_replicas"] if models else 0


def wait_for_replicas(settings, count: int = 2, model: str = MODEL) -> dict:
    eventually(lambda: healthy_replicas(settings, model) >= count, what=f"{count} healthy replicas of {model}")
    return status(settings)


@pytest.fixture(scope="session")
def image_home(tmp_path_factory) -> Path:
    """One home, so one wheelhouse download, for the tests that write image build contexts."""
    return tmp_path_factory.mktemp("image-home")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return write_tiny_service(tmp_path_factory.mktemp("reliability-service") / "tiny", name=MODEL, version=VERSION)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory, tiny_dir):
    """A 2-node local cluster with tiny on both nodes; small message and batch limits.

    The limits are in the environment only while the cluster starts: its processes keep them (a restarted
    node or gateway inherits them from the process that restarts it), and the tests that run after these in
    the same worker see the defaults again."""
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("FPGAFLOW_SERVER_MAX_MESSAGE_BYTES", str(MAX_MESSAGE_BYTES))
            patch.setenv("FPGAFLOW_SERVER_MAX_BATCH_SIZE", str(MAX_BATCH))
            patch.setenv("FPGAFLOW_CLUSTER_HEALTH_INTERVAL_SECONDS", "0.2")
            settings = stack.enter_context(running_cluster(tmp_path_factory.mktemp("reliability-home"), nodes=2))
            with cluster_client(settings) as client:
                client.deploy(str(tiny_dir), 2)
            wait_for_replicas(settings)
        yield settings


@pytest.fixture
def gateway_channel(cluster):
    with grpc.insecure_channel(status(cluster)["gateway"]["address"]) as channel:
        yield channel


@pytest.fixture
def node_channel(cluster):
    node = next(node for node in status(cluster)["nodes"] if node["model"] == MODEL)
    with grpc.insecure_channel(node["address"]) as channel:
        yield channel
