"""Fixtures of the pipeline flow-run tests."""

from __future__ import annotations

import pytest

from fpgaflow.fpga_runtime.cluster.daemon import gateway_running, stop_cluster
from fpgaflow.fpga_runtime.settings import get_settings


@pytest.fixture
def pipeline_settings(monkeypatch):
    """No fixed ports; no Docker engine, so the image step reports why it built nothing."""
    monkeypatch.setenv("FPGAFLOW_CLUSTER_GATEWAY_PORT", "0")
    monkeypatch.setenv("FPGAFLOW_DOCKER_HOST", "unix:///nonexistent/docker.sock")
    get_settings.cache_clear()
    yield get_settings()
    if gateway_running(get_settings()):
        stop_cluster(get_settings())
