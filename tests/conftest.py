"""Shared fixtures: every test gets its own FPGAFLOW_HOME, the session its own Prefect home; small real
images for the data tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.fixtures.settings import reload_settings
from tests.fixtures.weights_server import closed_port_url

SHARED_BUILD_CACHE = "FPGAFLOW_BUILD_CACHE_DIR"


def pytest_configure(config) -> None:
    """Prefect's database and cached task results go to a folder of this session, never the user's Prefect home.

    Every test has a home of its own, but they all share one build cache: tests that build the same seeded
    featurizer convert it once per session, and the serving image's wheelhouse is downloaded once. The first
    process makes it; xdist workers inherit it.
    """
    config.prefect_home = tempfile.mkdtemp(prefix="fpgaflow-tests-prefect-")
    os.environ["PREFECT_HOME"] = config.prefect_home
    config.build_cache = None
    if "PYTEST_XDIST_WORKER" not in os.environ:
        config.build_cache = tempfile.mkdtemp(prefix="fpgaflow-tests-build-cache-")
        os.environ[SHARED_BUILD_CACHE] = config.build_cache


def pytest_unconfigure(config) -> None:
    shutil.rmtree(config.prefect_home, ignore_errors=True)
    if config.build_cache:
        shutil.rmtree(config.build_cache, ignore_errors=True)


@pytest.fixture(autouse=True)
def fpgaflow_home(tmp_path_factory, monkeypatch) -> Path:
    home = tmp_path_factory.mktemp("fpgaflow-home")
    monkeypatch.setenv("FPGAFLOW_HOME", str(home))
    # No test downloads from the internet or reads the user's Keras cache: weights come from a test's own server.
    monkeypatch.setenv("FPGAFLOW_WEIGHTS_URL", closed_port_url())
    monkeypatch.setenv("FPGAFLOW_IMAGENET_WEIGHTS_DIR", str(home / "keras-cache"))
    reload_settings()
    yield home
    reload_settings()


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """The sample digits dataset at 32 px, 30 images per class (300 JPEG files)."""
    from fpgaflow.tasks.data.sample_data import write_sample_data

    directory = tmp_path_factory.mktemp("digits") / "digits"
    write_sample_data(directory, size=32, per_class=30)
    return directory
