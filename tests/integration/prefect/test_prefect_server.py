"""prefect.yaml against a real `prefect server start`: deployments, schedules, event triggers and a worker.

The ephemeral Prefect API runs no scheduler and no automations, so this is the one place they are
seen working: `prefect deploy --all` from the repository, then the check_data and monitor flows run
as `fpgaflow` commands against the server, and their events must make the server's triggers
create `retrain` flow runs with parameters taken from the events. Then a process worker of the
work pool runs such triggered retrains for a classifier and a detector: each trains, registers,
gates against the champion and rolls the new version onto a local cluster while a client scores
through the gateway without one failed request.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml

from fpgaflow.fpga_runtime.server import create_server
from fpgaflow.tasks.data.watch import check_dataset, record_fingerprint
from fpgaflow.tasks.events import DATASET_UPDATED, MODEL_DEGRADED
from tests.fixtures.labelled_images import HOLDOUT_CORRECT, HOLDOUT_IMAGES, write_labelled_folder
from tests.fixtures.tiny_service import encoded_images, write_tiny_service

REPOSITORY = Path(__file__).resolve().parents[3]
PREFECT = [sys.executable, "-m", "prefect"]
FPGAFLOW = [sys.executable, "-m", "fpgaflow.flows"]
WORK_POOL = "fpgaflow-process"
STARTUP_SECONDS = 240
TRIGGER_SECONDS = 60
POLL_SECONDS = 0.25
COMMAND_SECONDS = 300


def free_port() -> int:
    """A port free right now (`prefect server start` cannot bind port 0 itself)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def poll(fetch, seconds: float, what: str):
    """Call ``fetch`` until it returns something truthy; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        result = fetch()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {seconds} s")
        time.sleep(POLL_SECONDS)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    log_path = work / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    # One connection per request: a kept-alive one the server has closed meanwhile fails the next request.
    api = httpx.Client(base_url=env["PREFECT_API_URL"], timeout=30, headers={"Connection": "close"})

    def healthy() -> bool:
        if process.poll() is not None:
            pytest.fail(f"prefect server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            return api.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    try:
        poll(healthy, STARTUP_SECONDS, "healthy Prefect server")
        yield SimpleNamespace(api=api, env=env, log=log_path)
    finally:
        api.close()
        stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group ``process`` leads, SIGKILL if it has not ended within a minute."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run(command: list[str], env: dict, cwd: Path = REPOSITORY) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_SECONDS)


@pytest.fixture(scope="module")
def deployments(server) -> dict[str, dict]:
    """`prefect deploy --all` from the repository into the server's process work pool."""
    created = run([*PREFECT, "work-pool", "create", WORK_POOL, "--type", "process"], server.env)
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = run([*PREFECT, "--no-prompt", "deploy", "--all"], server.env)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    return {item["name"]: item for item in server.api.post("/deployments/filter", json={}).json()}


def flow_runs_of(server, deployment: dict) -> list[dict]:
    body = {"deployments": {"id": {"any_": [deployment["id"]]}}}
    return server.api.post("/flow_runs/filter", json=body).json()


def events_named(server, name: str) -> list[dict]:
    """Events the server has stored under ``name`` (it stores them a moment after they arrive)."""
    body = {"filter": {"event": {"name": [name]}}}
    return poll(lambda: server.api.post("/events/filter", json=body).json()["events"], TRIGGER_SECONDS, f"stored {name} event")


def fpgaflow(arguments: list[str], server, home: Path, env: dict | None = None) -> tuple[int, dict]:
    """Run an `fpgaflow` command against the server; its exit code and the JSON line it ends with."""
    result = run([*FPGAFLOW, *arguments, "--json"], {**server.env, "FPGAFLOW_HOME": str(home), **(env or {})})
    lines = result.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("{"), result.stdout[-2000:] + result.stderr[-3000:]
    return result.returncode, json.loads(lines[-1])


def test_every_deployment_of_prefect_yaml_is_created_with_its_schedule(deployments):
    spec = yaml.safe_load((REPOSITORY / "prefect.yaml").read_text())

    assert set(deployments) == {item["name"] for item in spec["deployments"]}
    assert set(deployments) == {"train-and-deploy", "deploy-model", "check-data", "retrain", "monitor"}
    for name, deployment in deployments.items():
        assert deployment["work_pool_name"] == WORK_POOL
        assert deployment["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPOSITORY)}}
        ], name
    schedules = {name: [item["schedule"] for item in deployment["schedules"]] for name, deployment in deployments.items()}
    assert schedules["check-data"] == [{"cron": "0 2 * * *", "timezone": "UTC", "day_or": True}]
    assert schedules["retrain"] == [{"cron": "0 3 * * 0", "timezone": "UTC", "day_or": True}]
    assert schedules["monitor"] == [{"cron": "0 * * * *", "timezone": "UTC", "day_or": True}]
    assert schedules["train-and-deploy"] == schedules["deploy-model"] == []


def test_the_scheduler_creates_the_scheduled_runs(server, deployments):
    runs = poll(lambda: flow_runs_of(server, deployments["check-data"]), TRIGGER_SECONDS, "scheduled check-data run")

    assert {run["state_type"] for run in runs} == {"SCHEDULED"}
    assert all(run["expected_start_time"][11:19] == "02:00:00" for run in runs)


def test_a_changed_data_folder_makes_the_trigger_start_retrain(server, deployments, tmp_path, fpgaflow_home):
    data_dir = tmp_path / "pets"
    for label, images in (("cat", encoded_images(2, seed=1)), ("dog", encoded_images(2, seed=2))):
        (data_dir / label).mkdir(parents=True)
        for index, image in enumerate(images):
            (data_dir / label / f"{index}.jpg").write_bytes(image)
    baseline = check_dataset(data_dir)
    record_fingerprint(data_dir, baseline.fingerprint, baseline.num_images)
    (data_dir / "dog" / "new.jpg").write_bytes(encoded_images(1, seed=3)[0])

    code, summary = fpgaflow(["check-data", str(data_dir), "--model", "pets"], server, fpgaflow_home)

    assert code == 0 and summary["changed"] and summary["event_id"]
    assert summary["previous_fingerprint"] == baseline.fingerprint
    (event,) = events_named(server, DATASET_UPDATED)
    assert event["id"] == summary["event_id"]
    assert event["payload"]["fingerprint"] == event["resource"]["fpgaflow.fingerprint"] == summary["fingerprint"]

    def triggered():
        return [run for run in flow_runs_of(server, deployments["retrain"]) if run["parameters"].get("model_name") == "pets"]

    (retrain_run,) = poll(triggered, TRIGGER_SECONDS, "retrain run triggered by the dataset event")
    assert retrain_run["parameters"] == {"data_dir": str(data_dir.resolve()), "model_name": "pets"}
    assert retrain_run["created_by"]["type"] == "AUTOMATION"
    assert retrain_run["state_type"] == "SCHEDULED"


def test_a_degraded_model_makes_the_trigger_start_retrain(server, deployments, tmp_path, fpgaflow_home):
    service_dir = write_tiny_service(tmp_path / "service", name="tiny", version="1")
    holdout = write_labelled_folder(tmp_path / "holdout", service_dir)
    node, port = create_server(service_dir, "127.0.0.1:0", device_profile="arria10")
    node.start()
    try:
        node.wait_until_ready(60)
        code, summary = fpgaflow(
            ["monitor", str(holdout), "--endpoint", f"127.0.0.1:{port}", "--model", "tiny", "--threshold", "0.9"],
            server,
            fpgaflow_home,
        )
    finally:
        node.stop(0).wait()

    assert code == 1 and summary["degraded"] and summary["event_id"]
    assert summary["score"] == HOLDOUT_CORRECT / HOLDOUT_IMAGES
    (event,) = events_named(server, MODEL_DEGRADED)
    assert event["id"] == summary["event_id"]
    assert event["resource"]["prefect.resource.id"] == "fpgaflow.model.tiny"
    assert event["payload"]["threshold"] == 0.9

    def triggered():
        return [run for run in flow_runs_of(server, deployments["retrain"]) if run["parameters"].get("model_name") == "tiny"]

    (retrain_run,) = poll(triggered, TRIGGER_SECONDS, "retrain run triggered by the degraded event")
    assert retrain_run["parameters"] == {"data_dir": "", "model_name": "tiny"}
    assert retrain_run["created_by"]["type"] == "AUTOMATION"


# -- the loop, run by a process worker ------------------------------------------------------------

RUN_SECONDS = 420  # one triggered retrain in the worker: a new process, training, conversion, rollout
CLUSTER_NODES = 3  # one node per model (a classifier, a detector), and one for a rollover to start beside it
DETECTOR_PIPELINE = {
    "featurizer": "ssd_vgg",
    "weights": "none",
    "input_size": 96,
    "detection": {"width": 0.125, "feature_maps": 4},
    "numerics": ["fp32"],
    "training": {"epochs": 2, "batch_size": 8},
}
TERMINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module")
def loop(server, deployments, tmp_path_factory):
    """A process worker of the work pool with its own FPGAFLOW_HOME, and a local cluster in that home.

    The earlier tests' triggered runs (data that trains nothing) and the scheduled runs are removed
    first, and the hourly and nightly deployments paused, so the worker runs only this loop's retrains.
    Any candidate that passed its gates is promoted (``retrain_min_improvement`` -1) so that every
    retrain rolls out under load; the rule itself is unit-tested.
    """
    from fpgaflow.fpga_runtime.cluster.daemon import start_gateway, stop_cluster
    from fpgaflow.tasks.settings import PipelineSettings
    from tests.integration.cluster.conftest import kill_leftovers

    for name in ("check-data", "monitor"):
        assert server.api.patch(f"/deployments/{deployments[name]['id']}", json={"paused": True}).status_code == 204
    for flow_run in server.api.post("/flow_runs/filter", json={}).json():
        server.api.delete(f"/flow_runs/{flow_run['id']}")
    home = tmp_path_factory.mktemp("loop-home")
    env = {
        "FPGAFLOW_HOME": str(home),
        "FPGAFLOW_CLUSTER_GATEWAY_PORT": "0",
        "FPGAFLOW_DOCKER_HOST": "unix:///nonexistent/docker.sock",
        "FPGAFLOW_RETRAIN_MIN_IMPROVEMENT": "-1",
    }
    settings = PipelineSettings(home=home)
    start_gateway(settings, nodes=CLUSTER_NODES, target="local", port=0)
    log_path = home / "worker.log"
    worker_env = {**server.env, **env, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1"}
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            [*PREFECT, "worker", "start", "--pool", WORK_POOL, "--type", "process"],
            env=worker_env,
            cwd=REPOSITORY,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield SimpleNamespace(home=home, env=env, settings=settings, worker_log=log_path)
    finally:
        stop_group(worker)
        try:
            stop_cluster(settings)
        finally:
            kill_leftovers(settings)


def first_champion(loop, server, data_dir: Path, config: dict, model: str) -> dict:
    """The model's first version, trained by `fpgaflow retrain` with ``config`` and rolled onto the cluster."""
    config_path = data_dir.parent / f"{model}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    code, summary = fpgaflow(
        ["retrain", str(data_dir), "--model", model, "--config", str(config_path)], server, loop.home, loop.env
    )
    assert code == 0 and summary["promoted"] and summary["deployment"]["target"] == "local", summary
    return summary


def triggered_retrain(server, deployments, loop, model: str, earlier: set[str]) -> dict:
    """The retrain run the automation created for ``model`` (not one of ``earlier``), once the worker finished it."""

    def created():
        runs = [run for run in flow_runs_of(server, deployments["retrain"]) if run["parameters"].get("model_name") == model]
        return [run for run in runs if run["id"] not in earlier]

    (flow_run,) = poll(created, TRIGGER_SECONDS, f"retrain run of {model} created by the automation")
    assert flow_run["created_by"]["type"] == "AUTOMATION"

    def finished():
        current = server.api.get(f"/flow_runs/{flow_run['id']}").json()
        return current if current["state_type"] in TERMINAL_STATES else None

    done = poll(finished, RUN_SECONDS, f"worker-run retrain of {model} to finish")
    assert done["state_type"] == "COMPLETED", loop.worker_log.read_text()[-6000:]
    return done


def decision_of(server, flow_run_id: str) -> str:
    body = {"artifacts": {"key": {"any_": ["retrain-decision"]}}, "flow_runs": {"id": {"any_": [flow_run_id]}}}
    (artifact,) = server.api.post("/artifacts/filter", json=body).json()
    return artifact["data"]


def served_versions(loop, model: str) -> set[str]:
    from tests.integration.cluster.conftest import status

    return {node["version"] for node in status(loop.settings)["nodes"] if node["model"] == model}


def assert_retrained_under_load(server, deployments, loop, model: str, metric: str, trigger) -> None:
    """``trigger()`` emits the event; the worker's retrain gates and rolls out while the load sees no failure."""
    from fpgaflow.fpga_runtime.client import PredictionClient
    from fpgaflow.tasks.registry.lookup import find_champion
    from tests.integration.cluster.conftest import Load

    earlier = {run["id"] for run in flow_runs_of(server, deployments["retrain"])}
    champion = find_champion(model, loop.settings)
    request = PredictionClient.detect_images if metric == "mAP@0.5" else PredictionClient.score_images
    with Load(loop.settings, model, max_requests=10**6, request=request) as load:
        load.wait_for(3)
        trigger()
        flow_run = triggered_retrain(server, deployments, loop, model, earlier)
        load.wait_for(3)
    decision = decision_of(server, flow_run["id"])
    new_champion = find_champion(model, loop.settings)
    subflows = subflow_names(server, flow_run["id"])

    assert load.failures == [] and load.succeeded > 6
    assert f"Measured: {metric}." in decision
    assert f"champion v{champion.version}" in decision  # gated against the champion on the same test images
    if "promote the candidate" in decision:
        assert new_champion.version != champion.version
        assert served_versions(loop, model) == {new_champion.version}
        assert subflows == {"train_and_deploy", "deploy_model"}
    else:
        assert new_champion.version == champion.version and "already is the champion" in decision
        assert subflows == {"train_and_deploy"}


def subflow_names(server, flow_run_id: str) -> set[str]:
    body = {"flow_runs": {"parent_flow_run_id": {"any_": [flow_run_id]}}}
    runs = server.api.post("/flow_runs/filter", json=body).json()
    return {server.api.get(f"/flows/{run['flow_id']}").json()["name"] for run in runs}


@pytest.fixture(scope="module")
def digits_loop(server, loop, tmp_path_factory) -> Path:
    """The classifier's data folder, its first champion serving on the cluster and its fingerprint recorded."""
    from fpgaflow.tasks.data.sample_data import write_sample_data
    from tests.integration.prefect.test_operations_flows import SMALL_PIPELINE

    data_dir = tmp_path_factory.mktemp("loop-data") / "loop-digits"
    write_sample_data(data_dir, size=32, per_class=12)
    first = first_champion(loop, server, data_dir, SMALL_PIPELINE, "loop-digits")
    assert first["metric"] == "accuracy"
    baseline = check_dataset(data_dir, loop.settings)
    record_fingerprint(data_dir, baseline.fingerprint, baseline.num_images, loop.settings)
    return data_dir


# A worker-run retrain starts a new process and trains, converts and rolls out: minutes on a loaded 2-core machine.
LOOP_TIMEOUT = 1500


@pytest.mark.timeout(LOOP_TIMEOUT)
def test_new_images_make_the_worker_retrain_and_roll_out_a_classifier(server, deployments, loop, digits_loop, tmp_path):
    from fpgaflow.tasks.data.sample_data import write_sample_data

    more = tmp_path / "more-digits"
    write_sample_data(more, size=32, per_class=14)

    def drop_new_images_and_check():
        for label in ("3", "8"):
            known = {path.name for path in (digits_loop / label).iterdir()}
            for name in sorted({path.name for path in (more / label).iterdir()} - known):
                (digits_loop / label / name).write_bytes((more / label / name).read_bytes())
        code, summary = fpgaflow(["check-data", str(digits_loop), "--model", "loop-digits"], server, loop.home, loop.env)
        assert code == 0 and summary["changed"] and summary["event_id"], summary

    assert_retrained_under_load(server, deployments, loop, "loop-digits", "accuracy", drop_new_images_and_check)


@pytest.mark.timeout(LOOP_TIMEOUT)
def test_a_degraded_monitor_makes_the_worker_retrain_the_classifier(server, deployments, loop, digits_loop, tmp_path):
    from fpgaflow.tasks.data.sample_data import write_sample_data

    # A class the model does not know makes the holdout accuracy less than 1.
    holdout = tmp_path / "holdout"
    write_sample_data(holdout, size=32, per_class=1)
    (holdout / "unknown").mkdir()
    (holdout / "unknown" / "a.jpg").write_bytes(next((holdout / "3").iterdir()).read_bytes())
    gateway = served_gateway(loop)

    def report_degraded():
        arguments = ["monitor", str(holdout), "--endpoint", gateway, "--model", "loop-digits", "--threshold", "1.0"]
        code, summary = fpgaflow(arguments, server, loop.home, loop.env)
        assert code == 1 and summary["degraded"] and summary["metric"] == "accuracy" and summary["event_id"], summary

    assert_retrained_under_load(server, deployments, loop, "loop-digits", "accuracy", report_degraded)


def served_gateway(loop) -> str:
    from tests.integration.cluster.conftest import status

    return status(loop.settings)["gateway"]["address"]


@pytest.mark.timeout(LOOP_TIMEOUT)
def test_new_images_make_the_worker_retrain_and_roll_out_a_detector(server, deployments, loop, tmp_path):
    from fpgaflow.tasks.detection.sample_data import write_detection_sample_data

    data_dir = tmp_path / "loop-boxes"
    write_detection_sample_data(data_dir, count=24, digits=(0, 1, 7), seed=0)
    first = first_champion(loop, server, data_dir, DETECTOR_PIPELINE, "loop-boxes")
    assert first["metric"] == "mAP@0.5"
    baseline = check_dataset(data_dir, loop.settings)
    record_fingerprint(data_dir, baseline.fingerprint, baseline.num_images, loop.settings)
    more = tmp_path / "more-boxes"
    write_detection_sample_data(more, count=6, digits=(0, 1, 7), seed=1)

    def drop_new_images_and_check():
        for image in sorted((more / "images").iterdir()):
            (data_dir / "images" / f"new-{image.name}").write_bytes(image.read_bytes())
            annotation = more / "annotations" / f"{image.stem}.json"
            (data_dir / "annotations" / f"new-{annotation.name}").write_bytes(annotation.read_bytes())
        code, summary = fpgaflow(["check-data", str(data_dir), "--model", "loop-boxes"], server, loop.home, loop.env)
        assert code == 0 and summary["changed"] and summary["event_id"], summary

    assert_retrained_under_load(server, deployments, loop, "loop-boxes", "mAP@0.5", drop_new_images_and_check)
