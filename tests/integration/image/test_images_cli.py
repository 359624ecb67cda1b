"""`fpgaflow images list|delete` against a real engine holding a real serving image."""

from __future__ import annotations

import contextlib
import json

import pytest
from docker.errors import ImageNotFound

from fpgaflow.flows.cli import main
from fpgaflow.tasks.packaging.image_build import build_image
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.settings import reload_settings
from tests.fixtures.tiny_service import write_tiny_service

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TAG = "fpgaflow-test/images-cli:5"


def test_an_image_built_for_a_version_is_listed_and_deleted_with_its_build_directory(
    docker_client, local_base_image, image_home, tmp_path, monkeypatch, capsys
):
    settings = PipelineSettings(home=image_home)
    service_dir = write_tiny_service(tmp_path / "service", name="images-cli", version="5")
    built = build_image(service_dir, base_image=local_base_image, tag=TAG, settings=settings)
    assert built.built, built.reason
    monkeypatch.setenv("FPGAFLOW_HOME", str(settings.home))
    reload_settings()
    try:
        assert main(["images", "list", "--json"]) == 0
        listed = [image for image in json.loads(capsys.readouterr().out) if image["reference"] == TAG]
        assert [(image["model"], image["version"], image["id"], image["services"]) for image in listed] == [
            ("images-cli", "5", built.image_id, [])
        ]

        assert main(["images", "delete", TAG]) == 0
        assert capsys.readouterr().out.strip() == f"deleted image {TAG}"
        with pytest.raises(ImageNotFound):
            docker_client.images.get(TAG)
        assert not (settings.home / "images" / "images-cli-5").exists()
    finally:
        reload_settings()
        with contextlib.suppress(ImageNotFound):
            docker_client.images.remove(TAG, force=True)
