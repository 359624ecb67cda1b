"""The control plane's decisions, with a launcher that records what it is asked to start and stop."""

from __future__ import annotations

import pytest

from fpgaflow.fpga_runtime.cluster.controller import Controller
from fpgaflow.fpga_runtime.cluster.gateway import Gateway
from fpgaflow.fpga_runtime.cluster.launcher import NodeProcess, NodeSpec
from fpgaflow.fpga_runtime.cluster.state import NodeRecord, StateStore, new_state
from fpgaflow.fpga_runtime.errors import FpgaflowError, InvalidInput, ModelNotFound, ResourceExhausted
from fpgaflow.tasks.deployment.split import split_service
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.split_service import WIDE_DEVICE_BYTES, small_device_profile, write_residual_service, write_wide_service
from tests.fixtures.tiny_service import write_tiny_service


class RecordingLauncher:
    """Starts nothing real: hands out addresses and pids, and remembers every start and stop."""

    requires_image = False

    def __init__(self) -> None:
        self.running: dict[str, tuple[int, NodeSpec]] = {}
        self.log: list[tuple[str, str, str]] = []
        self.failing_versions: set[str] = set()
        self._next = 0

    def start(self, spec: NodeSpec) -> NodeProcess:
        if spec.version in self.failing_versions:
            raise FpgaflowError(f"{spec.node_id}: version {spec.version} failed to load")
        self._next += 1
        self.running[spec.node_id] = (self._next, spec)
        self.log.append(("start", spec.node_id, spec.version))
        return NodeProcess(address=f"127.0.0.1:{20000 + self._next}", pid=self._next)

    def next_hop_address(self, process: NodeProcess) -> str:
        return process.address

    def alive(self, node: NodeRecord) -> bool:
        return node.id in self.running and self.running[node.id][0] == node.pid

    def stop(self, node: NodeRecord, grace: float) -> None:
        if self.running.pop(node.id, None) is not None:
            self.log.append(("stop", node.id, node.version))

    def crash(self, node_id: str) -> None:
        del self.running[node_id]

    def close(self) -> None:
        self.running.clear()

    def release(self) -> None:
        pass


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    root = tmp_path_factory.mktemp("services")
    deep = write_residual_service(root / "deep")
    split_service(deep, root / "deep-split", small_device_profile(root / "profiles"), PipelineSettings(home=root))
    wide_profile = small_device_profile(root / "wide-profiles", WIDE_DEVICE_BYTES)
    split_service(write_wide_service(root / "wide"), root / "wide-split", wide_profile, PipelineSettings(home=root))
    return {
        "wide": str(root / "wide-split"),
        "wide-profile": str(wide_profile),
        "v1": str(write_tiny_service(root / "tiny-1", version="1")),
        "v2": str(write_tiny_service(root / "tiny-2", version="2", seed=5)),
        "split": str(root / "deep-split"),
    }


@pytest.fixture
def cluster(tmp_path):
    def make(nodes: int, device: str = "arria10") -> tuple[Controller, RecordingLauncher]:
        settings = PipelineSettings(home=tmp_path, cluster_drain_timeout_seconds=1)
        launcher = RecordingLauncher()
        state = new_state("test", "local", device, nodes)
        gateway = Gateway("127.0.0.1:0", settings)
        return Controller(state, StateStore(tmp_path / "cluster"), launcher, gateway, settings), launcher

    return make


def nodes_of(controller: Controller, model: str) -> list[tuple[str, str]]:
    return [(node.id, node.version) for node in controller.state.nodes if node.model == model]


def test_deploy_places_replicas_on_the_lowest_free_nodes_and_saves_the_state(cluster, services):
    controller, launcher = cluster(3)
    placed = controller.deploy(services["v1"], 2)
    assert placed["placement"] == [
        {"version": "1", "nodes": ["node-1"], "requests": 0},
        {"version": "1", "nodes": ["node-2"], "requests": 0},
    ]
    assert sorted(launcher.running) == ["node-1", "node-2"]
    assert controller.store.load() == controller.state
    assert controller.gateway.router.has_healthy("tiny") and controller.gateway.data_plane.model_names() == ["tiny"]


def test_deploy_refuses_without_enough_free_nodes_and_changes_nothing(cluster, services):
    controller, launcher = cluster(2)
    with pytest.raises(ResourceExhausted, match=r"3 asked, 2 of 2 free"):
        controller.deploy(services["v1"], 3)
    assert launcher.log == [] and controller.state.placements == {} and len(controller.state.free_nodes()) == 2
    with pytest.raises(InvalidInput, match="at least 1"):
        controller.deploy(services["v1"], 0)


def test_a_rolling_update_starts_the_new_version_before_stopping_the_old(cluster, services):
    controller, launcher = cluster(3)
    controller.deploy(services["v1"], 2)
    launcher.log.clear()
    updated = controller.deploy(services["v2"], 2)
    assert (updated["version"], updated["versions"], updated["replicas"]) == ("2", ["2"], 2)
    # node-3 was free: v2 starts there first; then an old replica goes and its node takes the second v2 replica.
    assert launcher.log[0] == ("start", "node-3", "2")
    assert launcher.log.index(("stop", "node-2", "1")) < launcher.log.index(("start", "node-2", "2"))
    assert sorted(nodes_of(controller, "tiny")) == [("node-2", "2"), ("node-3", "2")]
    assert [replica["version"] for replica in controller.gateway.router.replicas("tiny")] == ["2", "2"]
    with pytest.raises(ModelNotFound):
        controller.gateway.data_plane.metadata("tiny", "1")


def test_an_update_that_would_stop_the_last_replica_first_is_refused(cluster, services):
    controller, launcher = cluster(1)
    controller.deploy(services["v1"], 1)
    with pytest.raises(ResourceExhausted, match="without failing requests: the new version needs 1 free node"):
        controller.deploy(services["v2"], 1)
    assert nodes_of(controller, "tiny") == [("node-1", "1")] and "node-1" in launcher.running


def test_a_failed_update_goes_back_to_the_running_version(cluster, services):
    controller, launcher = cluster(4)
    controller.deploy(services["v1"], 2)
    launcher.failing_versions.add("2")
    with pytest.raises(FpgaflowError, match="version 2 failed to load"):
        controller.deploy(services["v2"], 2)
    assert sorted(nodes_of(controller, "tiny")) == [("node-1", "1"), ("node-2", "1")]
    assert controller.state.placements["tiny"].version == "1" and len(controller.state.free_nodes()) == 2
    assert controller.gateway.data_plane.metadata("tiny").version == "1"


def test_scale_and_undeploy(cluster, services):
    controller, launcher = cluster(3)
    controller.deploy(services["v1"], 1)
    assert controller.scale("tiny", 3)["replicas"] == 3
    with pytest.raises(ResourceExhausted, match=r"1 asked, 0 of 3 free"):
        controller.scale("tiny", 4)
    assert controller.scale("tiny", 1)["placement"] == [{"version": "1", "nodes": ["node-1"], "requests": 0}]
    assert sorted(launcher.running) == ["node-1"]
    assert controller.deploy(services["v1"], 2)["replicas"] == 2  # the same version again: a scale
    assert controller.undeploy("tiny") == {"name": "tiny", "freed_nodes": ["node-1", "node-2"]}
    assert launcher.running == {} and len(controller.state.free_nodes()) == 3
    with pytest.raises(ModelNotFound, match="not deployed"):
        controller.scale("tiny", 1)


def test_a_split_model_takes_a_chain_of_nodes_started_from_the_last_segment(cluster, services):
    controller, launcher = cluster(4)
    placed = controller.deploy(services["split"], 2)
    assert [replica["nodes"] for replica in placed["placement"]] == [["node-1", "node-2"], ["node-3", "node-4"]]
    first, second = launcher.running["node-1"][1], launcher.running["node-2"][1]
    assert (first.segment, second.segment, second.next_hop) == (1, 2, None)
    assert first.next_hop == controller.state.node("node-2").address
    assert [node.segment for node in controller.state.nodes] == [1, 2, 1, 2]
    with pytest.raises(ResourceExhausted, match=r"split across 2 devices each\): 2 asked, 0 of 4 free"):
        controller.scale("deep", 3)


def test_a_layer_cut_over_several_devices_runs_in_one_node_that_holds_the_others(cluster, services):
    # The wide split: part 1 on one device, part 2 (a layer larger than a device) cut by columns over three.
    controller, launcher = cluster(8, services["wide-profile"])
    placed = controller.deploy(services["wide"], 2)
    assert [replica["nodes"] for replica in placed["placement"]] == [["node-1", "node-2"], ["node-5", "node-6"]]
    assert (placed["nodes_per_replica"], placed["devices_per_replica"]) == (2, 4)
    assert [(node.segment, node.host) for node in controller.state.nodes[:4]] == [
        (1, None),
        (2, None),
        (2, "node-2"),
        (2, "node-2"),
    ]
    assert sorted(launcher.running) == ["node-1", "node-2", "node-5", "node-6"]
    assert [launcher.running[node][1].devices for node in ("node-1", "node-2")] == [1, 3]
    with pytest.raises(ResourceExhausted, match=r"split across 4 devices each\): 4 asked, 0 of 8 free"):
        controller.scale("wide", 3)

    launcher.crash("node-2")
    controller.supervise_once()
    assert launcher.running["node-2"][1].devices == 3 and controller.state.node("node-4").host == "node-2"

    assert controller.undeploy("wide")["freed_nodes"] == [f"node-{number}" for number in range(1, 9)]
    assert len(controller.state.free_nodes()) == 8 and all(node.host is None for node in controller.state.nodes)


def test_the_supervisor_restarts_a_dead_replica_and_backs_off_when_the_restart_fails(cluster, services):
    controller, launcher = cluster(2)
    controller.deploy(services["v1"], 2)
    old_pid = controller.state.node("node-1").pid
    launcher.crash("node-1")
    controller.supervise_once()
    node = controller.state.node("node-1")
    assert node.pid != old_pid and node.restarts == 1 and "node-1" in launcher.running
    assert controller.gateway.router.has_healthy("tiny")

    launcher.crash("node-2")
    launcher.failing_versions.add("1")
    controller.supervise_once()
    assert controller.state.node("node-2").address is None and controller.state.node("node-2").restarts == 1
    launcher.failing_versions.clear()
    controller.supervise_once()  # within the back-off: no new attempt yet
    assert "node-2" not in launcher.running
