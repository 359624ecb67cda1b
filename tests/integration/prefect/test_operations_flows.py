"""check_data and monitor as real Prefect flow runs (the session's Prefect test harness), with their
artifacts and events. retrain runs as the worker runs it, against a real server: test_prefect_server.py."""

from __future__ import annotations

import json

from fpgaflow.flows.check_data import check_data
from fpgaflow.flows.monitor import monitor
from fpgaflow.fpga_runtime.server import create_server
from tests.fixtures.labelled_images import HOLDOUT_CORRECT, HOLDOUT_IMAGES, write_labelled_folder
from tests.fixtures.prefect_runs import artifacts_of
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
