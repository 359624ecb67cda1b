"""Fixtures of the pipeline flow-run tests."""

from __future__ import annotations

import pytest

from fpgaflow.fpga_runtime.cluster.daemon import gateway_running, stop_cluster
from fpgaflow.tasks.settings import get_pipeline_settings
from tests.fixtures.settings import reload_settings


@pytest.fixture
def pipeline_settings(monkeypatch):
    """No fixed ports; no Docker engine, so the image step reports why it built nothing."""
    monkeypatch.setenv("FPGAFLOW_CLUSTER_GATEWAY_PORT", "0")
    monkeypatch.setenv("FPGAFLOW_DOCKER_HOST", "unix:///nonexistent/docker.sock")
    reload_settings()
    settings = get_pipeline_settings()
    yield settings
    if gateway_running(settings):
        stop_cluster(settings)
