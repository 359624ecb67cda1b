"""One home (so one wheelhouse download) for the session, and settings pointing at no engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.lineage_service import write_service_with_lineage

MISSING_ENGINE = "unix:///nonexistent/fpgaflow-test/docker.sock"


@pytest.fixture(scope="session")
def image_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("image-home")


@pytest.fixture
def no_engine_settings(image_home) -> PipelineSettings:
    return PipelineSettings(home=image_home, docker_host=MISSING_ENGINE)


@pytest.fixture
def service_dir(tmp_path) -> Path:
    return write_service_with_lineage(tmp_path / "service")
