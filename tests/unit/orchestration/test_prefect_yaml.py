"""prefect.yaml agrees with the code: entrypoints, parameter names, event names and payload keys.

(The real server test deploys the file; these checks name the mismatch without starting anything.)
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from fpgaflow.tasks.data.watch import DatasetCheck, dataset_updated_payload
from fpgaflow.tasks.events import DATASET_RESOURCE_PREFIX, DATASET_UPDATED, MODEL_DEGRADED, MODEL_RESOURCE_PREFIX
from fpgaflow.tasks.operations.monitoring import MonitorResult, degraded_payload
from fpgaflow.tasks.operations.scoring import accuracy_report

REPOSITORY = Path(__file__).resolve().parents[3]
SPEC = yaml.safe_load((REPOSITORY / "prefect.yaml").read_text())
DEPLOYMENTS = {item["name"]: item for item in SPEC["deployments"]}
PAYLOAD_TEMPLATE = re.compile(r"^\{\{ event\.payload\.(\w+) \}\}$")


def flow_parameters(entrypoint: str) -> tuple[set[str], set[str]]:
    """(all parameters, required parameters) of the flow function an entrypoint names, read from its source."""
    path, function_name = entrypoint.split(":")
    tree = ast.parse((REPOSITORY / path).read_text())
    (function,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == function_name]
    decorators = [ast.unparse(item) for item in function.decorator_list]
    assert any(item.startswith("flow") for item in decorators), f"{entrypoint} is not a @flow"
    names = [arg.arg for arg in function.args.args]
    required = set(names[: len(names) - len(function.args.defaults)])
    return set(names), required


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_deployment_parameters_are_parameters_of_its_flow(name):
    deployment = DEPLOYMENTS[name]
    names, required = flow_parameters(deployment["entrypoint"])
    given = set(deployment.get("parameters", {}))

    assert given <= names
    assert required <= given, f"{name} leaves required parameters {required - given} without a default"
    for trigger in deployment.get("triggers", []):
        assert set(trigger["parameters"]) <= names


def test_every_deployment_uses_the_process_pool_and_runs_from_the_project():
    assert {item["work_pool"]["name"] for item in DEPLOYMENTS.values()} == {"fpgaflow-process"}
    (pull,) = SPEC["pull"]
    assert pull["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ project-dir.stdout }}"
    (build,) = SPEC["build"]
    assert build["prefect.deployments.steps.run_shell_script"] == {"id": "project-dir", "script": "pwd", "stream_output": False}


def test_schedules_are_cron_with_a_time_zone():
    expected = {"check-data": "0 2 * * *", "retrain": "0 3 * * 0", "monitor": "0 * * * *"}
    for name, deployment in DEPLOYMENTS.items():
        schedules = deployment.get("schedules", [])
        assert [item["cron"] for item in schedules] == ([expected[name]] if name in expected else [])
        assert all(item["timezone"] for item in schedules)


def triggers_expecting(event: str) -> list[dict]:
    return [trigger for trigger in DEPLOYMENTS["retrain"]["triggers"] if trigger["expect"] == [event]]


def templated_keys(trigger: dict) -> set[str]:
    keys = set()
    for value in trigger["parameters"].values():
        if isinstance(value, str) and "{{" in value:
            match = PAYLOAD_TEMPLATE.match(value)
            assert match, f"unexpected template {value!r}"
            keys.add(match.group(1))
    return keys


def test_dataset_trigger_takes_its_parameters_from_the_event_check_data_emits(tmp_path):
    (trigger,) = triggers_expecting(DATASET_UPDATED)
    check = DatasetCheck(data_dir=str(tmp_path), fingerprint="b" * 64, num_images=3, previous_fingerprint="a" * 64)

    assert trigger["match"] == {"prefect.resource.id": f"{DATASET_RESOURCE_PREFIX}*"}
    assert trigger["for_each"] == ["prefect.resource.id"]
    assert templated_keys(trigger) == {"data_dir", "model_name"}
    assert templated_keys(trigger) <= set(dataset_updated_payload(check))


def test_degraded_trigger_takes_the_model_from_the_event_monitor_emits(tmp_path):
    (trigger,) = triggers_expecting(MODEL_DEGRADED)
    result = MonitorResult(
        endpoint="h:1", model_name="m", data_dir=str(tmp_path), threshold=0.9, report=accuracy_report(["a"], ["b"]), skipped=()
    )

    assert trigger["match"] == {"prefect.resource.id": f"{MODEL_RESOURCE_PREFIX}*"}
    assert templated_keys(trigger) == {"model_name"} <= set(degraded_payload(result))
    assert trigger["parameters"]["data_dir"] == ""  # the champion's data folder
