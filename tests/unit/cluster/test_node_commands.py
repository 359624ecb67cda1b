"""How a node is started: a node takes the most devices it may run its service or segment over."""

from __future__ import annotations

import sys

from fpgaflow.fpga_runtime.cluster.launcher import NodeSpec
from fpgaflow.fpga_runtime.cluster.launchers.local import LocalLauncher
from fpgaflow.fpga_runtime.serving_image import CHAIN_MODULE, SERVICE_PATH, VENV, node_command
from fpgaflow.fpga_runtime.settings import Settings


def spec(**changes) -> NodeSpec:
    return NodeSpec(
        node_id="node-1",
        model="digits",
        version="1",
        service_dir="/srv/digits",
        image=None,
        device_profile="stratix10",
        **changes,
    )


def test_a_container_of_a_whole_service_may_be_asked_for_several_devices():
    entrypoint, arguments = node_command(None, None, 8500, "stratix10", 4)
    assert entrypoint is None
    assert arguments == [SERVICE_PATH, "--host", "0.0.0.0", "--port", "8500", "--device", "stratix10", "--devices", "4"]
    assert "--devices" not in node_command(None, None, 8500, "stratix10")[1]


def test_a_segment_container_takes_the_devices_its_segment_holds():
    entrypoint, arguments = node_command(2, "node-3:8500", 8500, "stratix10", 3)
    assert entrypoint == [f"{VENV}/bin/python", "-m", CHAIN_MODULE]
    assert arguments[:3] == [SERVICE_PATH, "--segment", "2"] and arguments[-2:] == ["--devices", "3"]
    assert "--devices" not in node_command(2, None, 8500, "stratix10")[1]


def test_local_nodes_are_held_to_the_devices_the_cluster_counts(tmp_path):
    launcher = LocalLauncher("test", Settings(home=tmp_path), tmp_path)
    assert launcher.command(spec())[-2:] == ["--devices", "1"]
    assert launcher.command(spec(devices=3))[-2:] == ["--devices", "3"]
    chained = launcher.command(spec(segment=1, next_hop="127.0.0.1:1", devices=2))
    assert chained[:3] == [sys.executable, "-m", "fpgaflow.fpga_runtime.chain"] and chained[-2:] == ["--devices", "2"]
