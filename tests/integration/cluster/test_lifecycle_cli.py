"""`fpgaflow services` and `models delete` against a real local cluster serving a registered tiny model."""

from __future__ import annotations

import json

import pytest

from fpgaflow.flows.cli import main
from fpgaflow.fpga_runtime.cluster.daemon import cluster_client
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.packaging import images
from fpgaflow.tasks.registry.client import mlflow_client
from fpgaflow.tasks.registry.lookup import resolve_version
from tests.fixtures.registered_service import register_tiny_service
from tests.fixtures.settings import reload_settings
from tests.integration.cluster.conftest import running_cluster

pytestmark = pytest.mark.slow


def run(capsys, *arguments: str) -> tuple[int, str, str]:
    code = main(list(arguments))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_served_version_is_deleted_only_after_its_service(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(images, "list_images", lambda settings=None: [])  # no serving image on the local target
    with running_cluster(tmp_path / "home", nodes=2) as settings:
        monkeypatch.setenv("FPGAFLOW_HOME", str(settings.home))
        reload_settings()
        config = PipelineConfig(data_dir=tmp_path / "pets", model_name="pets")
        version = register_tiny_service(settings, config, tmp_path / "services")
        with cluster_client(settings) as client:
            client.deploy(str(resolve_version("pets", version, settings).service_dir), replicas=1)
        try:
            [service] = json.loads(run(capsys, "services", "list", "--json")[1])
            assert (service["name"], service["versions"], service["running"], service["healthy_replicas"]) == (
                "pets",
                ["1"],
                True,
                1,
            )
            code, out, _ = run(capsys, "services", "show", "pets")
            assert code == 0 and "service pets version 1" in out and "replica 1: version 1 on node-1" in out

            code, _, err = run(capsys, "models", "delete", "pets")
            assert code == 1 and "service pets on the cluster" in err
            assert json.loads(run(capsys, "models", "show", "pets", "--json")[1])["service"] == "pets"

            code, out, _ = run(capsys, "models", "delete", "pets", "--cascade")
            assert code == 0 and out.splitlines() == ["deleted service pets", "deleted model version pets@1"]
            assert run(capsys, "services", "list")[1].strip() == "no services on the cluster"
            assert mlflow_client(settings).search_registered_models() == []
            code, _, err = run(capsys, "services", "delete", "pets")
            assert code == 2 and "no service 'pets'" in err
        finally:
            reload_settings()
