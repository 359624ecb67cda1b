"""A real node on a free port, loaded with the tiny service, shared by a test module."""

from __future__ import annotations

import grpc
import pytest

from fpgaflow.fpga_runtime.server import create_server
from tests.fixtures.tiny_service import encoded_images, write_tiny_service

READY_TIMEOUT = 60


@pytest.fixture(scope="module")
def service_dir(tmp_path_factory):
    return write_tiny_service(tmp_path_factory.mktemp("service") / "tiny", name="tiny", version="7")


@pytest.fixture(scope="module")
def images():
    return encoded_images(3)


@pytest.fixture(scope="module")
def server(service_dir):
    node, _port = create_server(service_dir, "127.0.0.1:0", device_profile="arria10", metrics_port=0)
    node.start()
    node.wait_until_ready(READY_TIMEOUT)
    yield node
    node.stop(0).wait()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as opened:
        yield opened
