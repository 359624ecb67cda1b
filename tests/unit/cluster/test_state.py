"""Cluster state: placement picks free nodes or refuses with the counts; saved atomically, reloaded whole."""

from __future__ import annotations

import json

import pytest

from fpgaflow.fpga_runtime.cluster.state import PlacementRecord, ReplicaRecord, StateStore, new_state
from fpgaflow.fpga_runtime.errors import FpgaflowError, ResourceExhausted


def test_reserve_picks_the_lowest_free_nodes():
    state = new_state("c1", "local", "stratix10", 4)
    state.node("node-1").model = "taken"
    assert [node.id for node in state.reserve(2, "two replicas")] == ["node-2", "node-3"]


def test_reserve_refuses_naming_how_many_are_free_and_how_many_were_asked():
    state = new_state("c1", "local", "stratix10", 3)
    state.node("node-2").model = "taken"
    with pytest.raises(ResourceExhausted, match=r"3 replica\(s\) of tiny: 3 asked, 2 of 3 free"):
        state.reserve(3, "3 replica(s) of tiny")


def test_resize_grows_with_new_ids_and_shrinks_by_dropping_free_nodes_only():
    state = new_state("c1", "local", "stratix10", 2)
    state.resize(4)
    assert [node.id for node in state.nodes] == ["node-1", "node-2", "node-3", "node-4"]
    state.node("node-4").model = "taken"
    state.resize(2)
    assert [node.id for node in state.nodes] == ["node-1", "node-4"]
    state.node("node-1").model = "other"
    with pytest.raises(ResourceExhausted, match="to 1 nodes: 2 nodes hold models"):
        state.resize(1)


def test_resize_refuses_no_nodes():
    with pytest.raises(FpgaflowError, match="at least one node"):
        new_state("c1", "local", "stratix10", 0)


def test_state_survives_a_save_and_load_with_placements_and_processes(tmp_path):
    state = new_state("c1", "docker", "arria10", 3)
    node = state.node("node-2")
    node.model, node.version, node.address, node.container, node.segment = "tiny", "4", "127.0.0.1:5", "ctr", 1
    state.placements["tiny"] = PlacementRecord(
        name="tiny",
        version="4",
        service_dir="/srv/tiny",
        image="fpgaflow/tiny:4",
        replicas=[ReplicaRecord(version="4", service_dir="/srv/tiny", image="fpgaflow/tiny:4", nodes=["node-2"])],
    )
    store = StateStore(tmp_path / "cluster")
    store.save(state)
    assert store.load() == state
    assert [path.name for path in (tmp_path / "cluster").iterdir()] == ["state.json"]


def test_a_missing_state_is_none_and_a_damaged_one_is_an_error_naming_the_file(tmp_path):
    store = StateStore(tmp_path)
    assert store.load() is None
    store.path.write_text(json.dumps({"name": "c1"}))
    with pytest.raises(FpgaflowError, match="state.json is damaged"):
        store.load()


def test_clearing_a_node_frees_it_and_detaching_keeps_it_reserved():
    state = new_state("c1", "local", "stratix10", 1)
    node = state.node("node-1")
    node.model, node.version, node.pid, node.address = "tiny", "1", 42, "127.0.0.1:1"
    node.detach()
    assert (node.model, node.pid, node.address) == ("tiny", None, None) and not node.free
    node.clear()
    assert node.free and node.version is None
