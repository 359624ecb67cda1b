"""The team stack for real: `scripts/team-stack up` starts PostgreSQL, the MLflow tracking server and the Prefect
server once for the module, and pipeline runs (`fpgaflow run` processes, each with its own home, as two people
on two machines would) go against them: two runs at once registering the same model, PostgreSQL restarted
between runs, and the tracking server gone in the middle of a run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from fpgaflow.fpga_runtime.service import load_service
from fpgaflow.tasks.artifacts import PIPELINE_ARTIFACTS
from fpgaflow.tasks.data.sample_data import write_sample_data
from fpgaflow.tasks.registry.runs import TAG_FLOW_RUN_ID, TAG_FLOW_RUN_URL
from fpgaflow.tasks.registry.version_state import CANDIDATE_ALIAS, TAG_GATES, TAG_STATUS, VersionStatus
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parents[3]
TEAM_STACK = REPOSITORY / "scripts" / "team-stack"
MODEL = "pets"
RUN_SECONDS = 900
# What a run up to `package` leaves, as with the embedded stores: MLflow run artifacts and Prefect artifact keys.
RUN_ARTIFACTS = {"conversion", "data", "evaluation", "model_card.md", "service"}
STEP_ARTIFACTS = set(PIPELINE_ARTIFACTS[: PIPELINE_ARTIFACTS.index("model-card") + 1])  # the steps up to package


def team_stack(directory: Path, *arguments: str) -> subprocess.CompletedProcess:
    done = subprocess.run([str(TEAM_STACK), *arguments, "--dir", str(directory)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def status(directory: Path) -> dict:
    report = json.loads(team_stack(directory, "status", "--json").stdout)
    return {**report, "running": {service["name"]: service["running"] for service in report["services"]}}


@pytest.fixture(scope="module")
def stack():
    # Under /tmp rather than pytest's 0700 folder: as root, PostgreSQL runs as the postgres user, who must reach it.
    directory = Path(tempfile.mkdtemp(prefix="fpgaflow-team-stack-"))
    directory.chmod(0o755)
    try:
        report = json.loads(team_stack(directory, "up", "--json").stdout)
        print(f"team stack up in {report['up_seconds']} s")
        exports = report["exports"]
        mlflow_url = exports["FPGAFLOW_MLFLOW_TRACKING_URI"]
        with httpx.Client(base_url=exports["PREFECT_API_URL"], timeout=30) as prefect:
            yield SimpleNamespace(
                directory=directory,
                exports=exports,
                mlflow_url=mlflow_url,
                mlflow=MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url),
                prefect=prefect,
            )
    finally:
        stopped = subprocess.run([str(TEAM_STACK), "down", "--dir", str(directory)], capture_output=True, text=True)
        shutil.rmtree(directory, ignore_errors=True)
    assert stopped.stdout.strip() == "stopped: mlflow, prefect, postgres", stopped.stdout + stopped.stderr


def start_run(stack, data_dir: Path, home: Path, *options: str) -> subprocess.Popen:
    """`fpgaflow run ... --until package` against the stack, from ``home`` (its own Prefect home and result cache)."""
    environment = {
        **os.environ,
        **stack.exports,
        "FPGAFLOW_HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
        "FPGAFLOW_MLFLOW_HTTP_RETRIES": "0",
    }
    command = [
        sys.executable, "-m", "fpgaflow.flows", "run", str(data_dir), "--model-name", MODEL, "--until", "package",
        "--input-size", "32", "--weights", "none", "--epochs", "2", "--hidden-units", "0", "--numerics", "fp32",
        "--json", "--quiet", *options,
    ]  # fmt: skip
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    """The exit code and the last line of stdout (the JSON summary, or the failed step's one line)."""
    stdout, stderr = process.communicate(timeout=RUN_SECONDS)
    lines = stdout.strip().splitlines()
    assert lines, stderr[-3000:]
    return process.returncode, lines[-1]


def succeeded(process: subprocess.Popen) -> dict:
    code, last = finish(process)
    assert code == 0, last
    return json.loads(last)


@pytest.fixture(scope="module")
def runs(stack, tmp_path_factory) -> list[SimpleNamespace]:
    """Two runs at once on different data (10 and 11 digits per class), each from its own home."""
    work = tmp_path_factory.mktemp("team-runs")
    started = []
    for name, per_class in (("a", 10), ("b", 11)):
        write_sample_data(work / name / "pets", size=32, per_class=per_class)
        started.append((work / name, start_run(stack, work / name / "pets", work / name / "home")))
    return [SimpleNamespace(folder=folder, summary=succeeded(process)) for folder, process in started]


def versions(stack) -> dict:
    """Every version of the model by number, read one by one: a search leaves each version's aliases out."""
    found = stack.mlflow.search_model_versions(f"name = '{MODEL}'")
    return {str(version.version): stack.mlflow.get_model_version(MODEL, version.version) for version in found}


def task_states(stack, flow_run_id: str) -> dict[str, str]:
    found = stack.prefect.post("/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}}).json()
    return {run["name"].rsplit("-", 1)[0]: run["state"]["name"] for run in found}


def test_two_runs_at_once_register_consecutive_versions_each_with_its_own_artifacts(stack, runs, tmp_path):
    summaries = [run.summary for run in runs]
    assert sorted(summary["model_version"] for summary in summaries) == ["1", "2"]
    registered = versions(stack)
    assert sorted(registered) == ["1", "2"]
    for summary in summaries:
        version = registered[summary["model_version"]]
        assert version.run_id == summary["mlflow_run_id"]
        assert version.tags["fpgaflow.dataset_fingerprint"] == summary["dataset_fingerprint"]
        assert (version.tags[TAG_STATUS], version.tags[TAG_GATES]) == (VersionStatus.PUBLISHED, "passed")
        downloaded = stack.mlflow.download_artifacts(summary["mlflow_run_id"], "service", str(tmp_path / version.version))
        service = load_service(downloaded)
        assert (service.name, service.version) == (MODEL, summary["model_version"])
        assert service.source["mlflow_run_id"] == summary["mlflow_run_id"]
        assert service.source["dataset_fingerprint"] == summary["dataset_fingerprint"]
    assert summaries[0]["dataset_fingerprint"] != summaries[1]["dataset_fingerprint"]
    # The gates gave candidate to both in turn, and it stays on one; champion only ever comes from `fpgaflow promote`.
    assert sorted(alias for version in registered.values() for alias in version.aliases) == [CANDIDATE_ALIAS]
    # Artifacts went through the server into the stack's folder, none into a run's own home.
    stored = stack.directory / "artifacts"
    for run in runs:
        assert len(list(stored.glob(f"*/{run.summary['mlflow_run_id']}/artifacts/service/service.json"))) == 1
        assert not (run.folder / "home" / "mlartifacts").exists()


def test_a_run_against_the_stack_is_tracked_as_with_the_embedded_stores(stack, runs):
    summary = runs[0].summary
    flow_run_id = summary["flow_run_id"]
    run = stack.mlflow.get_run(summary["mlflow_run_id"])
    assert run.data.tags[TAG_FLOW_RUN_ID] == flow_run_id
    assert run.data.tags[TAG_FLOW_RUN_URL].startswith(stack.exports["PREFECT_API_URL"].removesuffix("/api"))
    assert {item.path for item in stack.mlflow.list_artifacts(run.info.run_id)} == RUN_ARTIFACTS
    version = stack.mlflow.get_model_version(MODEL, summary["model_version"])
    assert version.description.startswith(f"# {MODEL} version {summary['model_version']}\n")
    assert version.source.startswith("models:/m-")
    assert stack.mlflow.get_logged_model(version.source.removeprefix("models:/")).source_run_id == run.info.run_id

    flow_run = stack.prefect.get(f"/flow_runs/{flow_run_id}").json()
    assert flow_run["state"]["type"] == "COMPLETED"
    body = {"flow_runs": {"id": {"any_": [flow_run_id]}}}
    assert {artifact["key"] for artifact in stack.prefect.post("/artifacts/filter", json=body).json()} >= STEP_ARTIFACTS


def test_postgres_restarted_between_runs_loses_nothing(stack, runs):
    def snapshot() -> dict:
        flow_runs = stack.prefect.post("/flow_runs/filter", json={}).json()
        return {
            "versions": {number: (v.run_id, v.aliases, v.description, v.tags) for number, v in versions(stack).items()},
            "metrics": {
                run.summary["mlflow_run_id"]: stack.mlflow.get_run(run.summary["mlflow_run_id"]).data.metrics for run in runs
            },
            "flow_runs": {item["id"]: item["state"]["type"] for item in flow_runs},
        }

    before = snapshot()
    port = status(stack.directory)["services"][0]["port"]
    assert team_stack(stack.directory, "down", "postgres").stdout.strip() == "stopped: postgres"
    assert status(stack.directory)["running"] == {"postgres": False, "mlflow": True, "prefect": True}
    team_stack(stack.directory, "up")
    after_restart = status(stack.directory)
    assert all(after_restart["running"].values()) and after_restart["services"][0]["port"] == port
    assert snapshot() == before


def test_tracking_server_gone_mid_run_fails_the_step_naming_it_and_a_rerun_resumes_without_a_new_version(stack, runs):
    first = runs[0]
    data_dir, home = first.folder / "pets", first.folder / "home"
    assert team_stack(stack.directory, "down", "mlflow").stdout.strip() == "stopped: mlflow"
    # The same run again with a new label: every step before registration comes from the cache without asking
    # MLflow, so the server is missed first where the run registers, after its MLflow run was started and trained.
    code, line = finish(start_run(stack, data_dir, home, "--tag", "round=2"))
    assert code == 1
    assert line.startswith("fpgaflow run: registering pets from MLflow run ")
    assert f"the MLflow tracking server at {stack.mlflow_url} did not answer: [Errno 111] Connection refused" in line
    failed = stack.prefect.post("/flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": ["FAILED"]}}}}).json()
    assert len(failed) == 1
    states = task_states(stack, failed[0]["id"])
    assert states["register-model"] == "Failed"
    assert {states[step] for step in ("start-mlflow-run", "train")} == {"Cached"}

    team_stack(stack.directory, "up")
    assert status(stack.directory)["exports"] == stack.exports
    again = succeeded(start_run(stack, data_dir, home, "--tag", "round=2"))
    assert (again["mlflow_run_id"], again["model_version"]) == (first.summary["mlflow_run_id"], first.summary["model_version"])
    states = task_states(stack, again["flow_run_id"])
    assert {states[step] for step in ("start-mlflow-run", "train", "convert-to-onnx", "numerics")} == {"Cached"}
    registered = versions(stack)
    assert sorted(registered) == ["1", "2"]
    assert registered[again["model_version"]].tags["round"] == "2"
