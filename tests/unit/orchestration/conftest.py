"""The tiny real service and a holdout folder on which it scores exactly HOLDOUT_CORRECT of HOLDOUT_IMAGES."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.labelled_images import write_labelled_folder
from tests.fixtures.tiny_service import write_tiny_service


@pytest.fixture(scope="module")
def tiny_service_dir(tmp_path_factory) -> Path:
    return write_tiny_service(tmp_path_factory.mktemp("service") / "tiny", name="tiny", version="1")


@pytest.fixture(scope="module")
def holdout_dir(tmp_path_factory, tiny_service_dir) -> Path:
    return write_labelled_folder(tmp_path_factory.mktemp("holdout") / "holdout", tiny_service_dir)
