"""check_data, monitor, retrain and deploy_model as real Prefect flow runs (the session's Prefect test
harness), with their artifacts, the MLflow registry they change and a real local cluster they deploy to."""

from __future__ import annotations

import json

import pytest
import yaml

from fpgaflow.flows.check_data import check_data
from fpgaflow.flows.monitor import monitor
from fpgaflow.flows.retrain import retrain
from fpgaflow.fpga_runtime.cluster.daemon import start_gateway, stop_cluster
from fpgaflow.fpga_runtime.server import create_server
from fpgaflow.tasks.operations.scoring import folder_images, score_service_dir
from fpgaflow.tasks.registry.lookup import find_champion, resolve_version
from fpgaflow.tasks.registry.version_state import CANDIDATE_ALIAS, CHAMPION_ALIAS
from fpgaflow.tasks.settings import get_pipeline_settings
from tests.fixtures.labelled_images import HOLDOUT_CORRECT, HOLDOUT_IMAGES, write_labelled_folder
from tests.fixtures.prefect_runs import artifacts_of, child_flow_runs
from tests.fixtures.tiny_service import encoded_images, write_tiny_service

# ResNet-50 at 32 px from random weights: seconds to train, and in msfp9 its 23.5M weights fit one
# stratix10 device, so one node holds a replica.
SMALL_PIPELINE = {
    "featurizer": "resnet50",
    "weights": "none",
    "input_size": 32,
    "numerics": ["fp32", "msfp9"],
    "serve_format": "msfp9",
    "max_accuracy_drop": 1.0,
    "training": {"hidden_units": 0, "epochs": 3},
}
CLUSTER_NODES = 2


def run_id(state):
    return state.state_details.flow_run_id


def test_check_data_emits_once_per_change_and_reports_each_check(prefect_harness, tmp_path):
    data_dir = tmp_path / "pets"
    for label, seed in (("cat", 1), ("dog", 2)):
        (data_dir / label).mkdir(parents=True)
        for index, image in enumerate(encoded_images(2, seed=seed)):
            (data_dir / label / f"{index}.jpg").write_bytes(image)

    first = check_data(str(data_dir), return_state=True).result()
    unchanged = check_data(str(data_dir), return_state=True).result()
    (data_dir / "cat" / "new.jpg").write_bytes(encoded_images(1, seed=3)[0])
    changed_state = check_data(str(data_dir), "pets", return_state=True)
    changed = changed_state.result()
    settled = check_data(str(data_dir))

    assert (first["changed"], first["previous_fingerprint"], first["event_id"]) == (False, None, None)
    assert (unchanged["changed"], unchanged["previous_fingerprint"]) == (False, first["fingerprint"])
    assert changed["changed"] and changed["event_id"] and changed["num_images"] == 5
    assert changed["previous_fingerprint"] == first["fingerprint"] != changed["fingerprint"]
    assert (settled["changed"], settled["previous_fingerprint"]) == (False, changed["fingerprint"])
    report = artifacts_of(run_id(changed_state))["dataset-check"]
    assert "**changed**" in report.data and changed["event_id"] in report.data


def test_monitor_scores_the_holdout_and_reports_a_degraded_model(prefect_harness, tmp_path):
    service_dir = write_tiny_service(tmp_path / "service", name="tiny", version="1")
    holdout = write_labelled_folder(tmp_path / "holdout", service_dir)
    node, port = create_server(service_dir, "127.0.0.1:0", device_profile="arria10")
    node.start()
    try:
        node.wait_until_ready(60)
        healthy_state = monitor(f"127.0.0.1:{port}", str(holdout), "tiny", threshold=0.5, return_state=True)
        degraded = monitor(f"127.0.0.1:{port}", str(holdout), "tiny", threshold=0.9)
    finally:
        node.stop(0).wait()

    healthy = healthy_state.result()
    assert healthy["score"] == degraded["score"] == HOLDOUT_CORRECT / HOLDOUT_IMAGES
    assert (healthy["degraded"], healthy["event_id"]) == (False, None)
    assert degraded["degraded"] and degraded["event_id"]
    table = json.loads(artifacts_of(run_id(healthy_state))["monitor-quality"].data)
    assert sum(row["images"] for row in table) == HOLDOUT_IMAGES
    assert sum(row["correct"] for row in table) == HOLDOUT_CORRECT


@pytest.fixture
def local_cluster(fpgaflow_home):
    settings = get_pipeline_settings()
    start_gateway(settings, nodes=CLUSTER_NODES, target="local", port=0)
    try:
        yield settings
    finally:
        stop_cluster(settings)


def test_retrain_promotes_rolls_out_then_keeps_the_champion(prefect_harness, local_cluster, digits_dir, tmp_path):
    config_path = tmp_path / "pipeline.yaml"
    config_path.write_text(yaml.safe_dump(SMALL_PIPELINE))

    first_state = retrain(str(digits_dir), config_path=str(config_path), return_state=True)
    first = first_state.result()

    assert first["promoted"] and first["champion_version"] is None
    assert "no champion yet" in first["reason"]
    champion = find_champion("digits")
    assert champion.version == first["candidate_version"]
    assert set(champion.aliases) == {CHAMPION_ALIAS, CANDIDATE_ALIAS}
    deployment = first["deployment"]
    assert (deployment["model_version"], deployment["target"], deployment["replicas"]) == (champion.version, "local", 1)
    assert deployment["devices_per_replica"] == 1 and len(deployment["nodes"]) == 1
    assert "retrain-decision" in artifacts_of(run_id(first_state))
    subflows = child_flow_runs(run_id(first_state))
    assert set(subflows) == {"train_and_deploy", "deploy_model"}
    assert "deployment" in artifacts_of(subflows["deploy_model"].id)

    # The deployed model answers through the gateway exactly as its stages score in process.
    watched = monitor(deployment["endpoint"], str(digits_dir), "digits", threshold=0.0)
    images, _ = folder_images(digits_dir)
    in_process = score_service_dir(resolve_version("digits", CHAMPION_ALIAS).service_dir, images, batch_size=32)
    assert (watched["images"], watched["score"]) == (in_process.images, in_process.accuracy)
    assert not watched["degraded"]

    # Unchanged data and the champion's own config: the same run, so the candidate is the champion.
    second = retrain(model_name="digits")

    assert not second["promoted"] and "deployment" not in second, second
    assert second["candidate_version"] == second["champion_version"] == champion.version
    assert "already is the champion" in second["reason"]
