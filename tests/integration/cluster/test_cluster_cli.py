"""The commands as a user runs them: cluster up/status/down, deploy NAME@ALIAS from the registry, scale, undeploy."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.fpga_runtime.cluster.processes import pid_alive, wait_for_exit
from fpgaflow.tasks.settings import PipelineSettings
from mlflow import MlflowClient
from tests.fixtures.tiny_service import encoded_images, reference_probabilities, write_tiny_service
from tests.integration.cluster.conftest import kill_leftovers

pytestmark = pytest.mark.slow


def fpgaflow(home, *arguments: str, expect: int = 0) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [sys.executable, "-m", "fpgaflow.flows", *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FPGAFLOW_HOME": str(home), "FPGAFLOW_CLUSTER_GATEWAY_PORT": "0"},
    )
    assert completed.returncode == expect, (
        f"fpgaflow {' '.join(arguments)}: exit {completed.returncode}\n{completed.stdout}\n{completed.stderr}"
    )
    return completed


def register_champion(home, service_dir) -> None:
    """A registered version whose service definition lives only in its MLflow run (no local directory recorded)."""
    settings = PipelineSettings(home=home)
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    experiment = client.create_experiment("cli-test", artifact_location=str(home / "mlartifacts"))
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(service_dir), "service")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("tiny")
    version = client.create_model_version("tiny", f"runs:/{run.info.run_id}/service", run_id=run.info.run_id)
    client.set_registered_model_alias("tiny", "champion", version.version)


def test_cluster_commands_end_to_end(tmp_path):
    home = tmp_path / "home"
    service_dir = write_tiny_service(tmp_path / "built" / "tiny", name="tiny", version="1")
    register_champion(home, service_dir)
    try:
        up = json.loads(fpgaflow(home, "cluster", "up", "--nodes", "3", "--port", "0", "--json").stdout)
        assert up["target"] == "local" and [node["id"] for node in up["nodes"]] == ["node-1", "node-2", "node-3"]
        assert pid_alive(up["gateway"]["pid"])
        fpgaflow(home, "cluster", "up", "--port", "0", expect=2)  # one gateway per cluster

        deployed = json.loads(fpgaflow(home, "deploy", "tiny@champion", "--replicas", "2", "--json").stdout)
        assert (deployed["model"], deployed["version"], deployed["replicas"], deployed["target"]) == ("tiny", "1", 2, "local")
        assert deployed["endpoint"] == up["gateway"]["address"]

        host, port = deployed["endpoint"].rsplit(":", 1)
        images = encoded_images(2)
        with PredictionClient(host, int(port), retries=0, timeout=30) as client:
            probabilities = client.score_images(images)
        assert abs(probabilities - reference_probabilities(service_dir, images)).max() < 1e-5

        status = json.loads(fpgaflow(home, "cluster", "status", "--json").stdout)
        for node in status["nodes"]:
            assert {"id", "address", "pid", "model", "healthy"} <= node.keys()
        assert [(node["model"], node["healthy"], pid_alive(node["pid"])) for node in status["nodes"]] == [
            ("tiny", True, True),
            ("tiny", True, True),
            (None, True, False),
        ]
        text = fpgaflow(home, "cluster", "status").stdout
        assert "node-1" in text and "P99 MS" in text

        refused = fpgaflow(home, "scale", "tiny", "--replicas", "4", expect=2)
        assert "2 asked, 1 of 3 free" in refused.stderr
        assert json.loads(fpgaflow(home, "scale", "tiny", "--replicas", "3", "--json").stdout)["replicas"] == 3
        undeployed = json.loads(fpgaflow(home, "undeploy", "tiny", "--json").stdout)
        assert undeployed["freed_nodes"] == ["node-1", "node-2", "node-3"]
        missing = fpgaflow(home, "undeploy", "tiny", expect=2)
        assert "'tiny' is not deployed" in missing.stderr

        assert json.loads(fpgaflow(home, "cluster", "down", "--json").stdout)["undeployed"] == []
        assert wait_for_exit(up["gateway"]["pid"], 30)
        assert "no cluster" in fpgaflow(home, "cluster", "status", expect=2).stderr

        # With no cluster running, deploy starts one (cluster_nodes nodes) and leaves the service running.
        fpgaflow(home, "deploy", "tiny@1")
        restarted = json.loads(fpgaflow(home, "cluster", "status", "--json").stdout)
        assert [(node["id"], node["model"]) for node in restarted["nodes"]] == [("node-1", "tiny"), ("node-2", None)]
        pids = [restarted["gateway"]["pid"], restarted["nodes"][0]["pid"]]
        assert json.loads(fpgaflow(home, "cluster", "down", "--json").stdout)["undeployed"] == ["tiny"]
        assert all(wait_for_exit(pid, 30) for pid in pids)
    finally:
        kill_leftovers(PipelineSettings(home=home))
