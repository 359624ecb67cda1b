"""Targets choose their node launcher from one table; cluster states written before the table still load."""

from __future__ import annotations

import argparse
import json

import pytest

from fpgaflow.fpga_runtime.cluster.daemon import _load_or_create_state
from fpgaflow.fpga_runtime.cluster.launchers import LAUNCHERS, build_launcher, launcher_name
from fpgaflow.fpga_runtime.cluster.launchers.docker import DockerLauncher
from fpgaflow.fpga_runtime.cluster.launchers.local import LocalLauncher
from fpgaflow.fpga_runtime.cluster.state import StateStore, new_state
from fpgaflow.fpga_runtime.errors import FpgaflowError
from fpgaflow.tasks.settings import PipelineSettings

EARLIER_NAMES = {
    "fpgaflow.fpga_runtime.cluster.local:LocalLauncher": "local",
    "fpgaflow.tasks.deployment.docker_cluster:DockerLauncher": "docker",
}


def test_the_table_names_each_target_launcher():
    assert {"local": LocalLauncher, "docker": DockerLauncher} == LAUNCHERS
    assert (LocalLauncher.requires_image, DockerLauncher.requires_image) == (False, True)


@pytest.mark.parametrize(("saved", "name"), [*EARLIER_NAMES.items(), ("local", "local"), ("docker", "docker")])
def test_launchers_saved_as_module_and_class_map_to_their_table_name(saved, name):
    assert launcher_name(saved) == name


def test_a_state_saved_with_a_module_and_class_launcher_loads_and_is_saved_with_the_table_name(tmp_path):
    settings = PipelineSettings(home=tmp_path)
    store = StateStore(tmp_path / "cluster")
    earlier = new_state("c1", "local", "arria10", 2).model_dump(mode="json")
    earlier["launcher"] = "fpgaflow.fpga_runtime.cluster.local:LocalLauncher"
    store.path.parent.mkdir(parents=True)
    store.path.write_text(json.dumps(earlier))
    state = _load_or_create_state(store, argparse.Namespace(target=None, device=None, nodes=None), settings)
    assert (state.target, state.launcher, len(state.nodes)) == ("local", "local", 2)
    assert isinstance(build_launcher(earlier["launcher"], state.name, settings, store.directory), LocalLauncher)


def test_a_new_state_names_its_launcher_by_target(tmp_path):
    store = StateStore(tmp_path / "cluster")
    state = _load_or_create_state(
        store, argparse.Namespace(target="docker", device="arria10", nodes=1), PipelineSettings(home=tmp_path)
    )
    assert (state.target, state.launcher) == ("docker", "docker")


def test_a_target_without_a_launcher_is_refused(tmp_path):
    with pytest.raises(FpgaflowError, match="no cluster launcher for the 'kubernetes' target"):
        build_launcher("kubernetes", "c1", PipelineSettings(home=tmp_path), tmp_path)
    with pytest.raises(FpgaflowError, match=r"a cluster runs on the targets \['docker', 'local'\], not 'kubernetes'"):
        _load_or_create_state(
            StateStore(tmp_path / "cluster"),
            argparse.Namespace(target="kubernetes", device=None, nodes=None),
            PipelineSettings(home=tmp_path),
        )
