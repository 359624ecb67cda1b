"""`fpgaflow models|images|services` against a throwaway SQLite registry, a saved cluster state and a fake image list.

The Docker engine and the cluster's gateway are replaced by small fakes that keep their records; the real
cluster is exercised by tests/integration/cluster/test_lifecycle_cli.py.
"""

from __future__ import annotations

import json

import pytest

from fpgaflow.flows.cli import main
from fpgaflow.fpga_runtime.cluster.state import PlacementRecord, ReplicaRecord, StateStore, cluster_dir, new_state
from fpgaflow.fpga_runtime.errors import InvalidInput
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.deployment import services
from fpgaflow.tasks.packaging import images
from fpgaflow.tasks.packaging.docker_engine import EngineUnreachable
from fpgaflow.tasks.registry.catalog import VersionReference
from fpgaflow.tasks.registry.client import mlflow_client
from fpgaflow.tasks.registry.version_state import CHAMPION_ALIAS
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.registered_service import register_tiny_service
from tests.fixtures.settings import reload_settings


class FakeEngine:
    """The serving images the Docker engine would list; ``fail_removal`` makes removing one fail."""

    def __init__(self) -> None:
        self.images: list[images.ServingImage] = []
        self.fail_removal = False

    def add(self, model: str, version: str) -> images.ServingImage:
        image = images.ServingImage(
            id=f"sha256:{len(self.images):064d}",
            tags=(f"fpgaflow/{model}:{version}",),
            model=model,
            version=version,
            numeric_format="fp32",
            size_bytes=123_000_000,
            created="2026-12-07T12:00:00+00:00",
        )
        self.images.append(image)
        return image

    def list_images(self, settings=None) -> list[images.ServingImage]:
        return list(self.images)

    def remove_image(self, image, settings=None) -> None:
        if self.fail_removal:
            raise RuntimeError("the engine refused: conflict")
        self.images.remove(image)


def place(settings: PipelineSettings, name: str, version: str, image: str | None = None) -> None:
    """A service of ``name`` ``version`` in the cluster's saved state (its gateway is not running)."""
    store = StateStore(cluster_dir(settings))
    state = store.load() or new_state("test", "local", "stratix10", 2)
    state.placements[name] = PlacementRecord(
        name=name,
        version=version,
        service_dir="/nowhere",
        image=image,
        replicas=[ReplicaRecord(version=version, service_dir="/nowhere", image=image, nodes=["node-1"])],
    )
    store.save(state)


def fake_undeploy(name: str, settings: PipelineSettings) -> dict:
    """What the gateway's undeploy does to the saved state."""
    store = StateStore(cluster_dir(settings))
    state = store.load()
    assert state is not None and name in state.placements
    del state.placements[name]
    store.save(state)
    return {"name": name, "freed_nodes": ["node-1"]}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """Model 'pets' with versions 1 (champion) and 2; the fake engine and gateway in place."""
    settings = PipelineSettings(home=tmp_path / "home")
    config = PipelineConfig(data_dir=tmp_path / "pets", model_name="pets")
    register_tiny_service(settings, config, settings.home / "services", seed=1, aliases=(CHAMPION_ALIAS,))
    register_tiny_service(settings, config, settings.home / "services", seed=2)
    engine = FakeEngine()
    monkeypatch.setattr(images, "list_images", engine.list_images)
    monkeypatch.setattr(images, "remove_image", engine.remove_image)
    monkeypatch.setattr(services, "delete_service", lambda name, settings=None: fake_undeploy(name, settings))
    monkeypatch.setenv("FPGAFLOW_HOME", str(settings.home))
    reload_settings()
    yield settings, engine
    reload_settings()


def run(capsys, *arguments: str) -> tuple[int, str, str]:
    code = main(list(arguments))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def versions(settings: PipelineSettings, name: str = "pets") -> list[str]:
    found = mlflow_client(settings).search_model_versions(f"name = '{name}'")
    return sorted(str(version.version) for version in found)


def test_list_shows_models_and_a_models_versions(home, capsys):
    code, out, _ = run(capsys, "models", "list", "--json")
    assert code == 0
    [pets] = json.loads(out)
    assert (pets["name"], pets["versions"], pets["newest"], pets["aliases"]) == ("pets", 2, "2", {"champion": "1"})

    code, out, _ = run(capsys, "models", "list", "pets")
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["VERSION", "ALIASES", "STATUS"]
    assert [row.split()[:2] for row in rows] == [["2", "-"], ["1", "champion"]]


def test_name_alone_is_the_newest_version_and_an_alias_or_number_picks_one(home, capsys):
    assert json.loads(run(capsys, "models", "show", "pets", "--json")[1])["version"] == "2"
    shown = json.loads(run(capsys, "models", "show", "pets@champion", "--json")[1])
    assert (shown["version"], shown["aliases"], shown["service"], shown["images"]) == ("1", ["champion"], None, [])
    assert json.loads(run(capsys, "models", "show", "pets@1", "--json")[1]) == shown

    code, _, err = run(capsys, "models", "show", "pets@retired")
    assert code == 2 and "has no alias 'retired'" in err and "champion" in err
    with pytest.raises(InvalidInput, match="after '@'"):
        VersionReference.parse("pets@")


def test_show_names_the_service_and_images_that_use_a_version(home, capsys):
    settings, engine = home
    engine.add("pets", "1")
    place(settings, "pets", "1", image="fpgaflow/pets:1")
    code, out, _ = run(capsys, "models", "show", "pets@1")
    assert code == 0
    assert "pets version 1 (champion)" in out
    assert "service         pets" in out and "images          fpgaflow/pets:1" in out


def test_delete_is_refused_while_a_service_or_image_uses_the_version(home, capsys):
    settings, engine = home
    engine.add("pets", "2")
    code, _, err = run(capsys, "models", "delete", "pets")
    assert code == 1
    assert "refused: pets version 2 is still used by image fpgaflow/pets:2" in err and "--cascade" in err

    place(settings, "pets", "2")
    code, _, err = run(capsys, "models", "delete", "pets@2")
    assert code == 1 and "service pets on the cluster (`fpgaflow services delete pets`)" in err
    assert versions(settings) == ["1", "2"]


def test_cascade_that_fails_midway_leaves_a_consistent_state_and_a_rerun_finishes(home, capsys):
    settings, engine = home
    image = engine.add("pets", "2")
    place(settings, "pets", "2", image=image.tags[0])
    engine.fail_removal = True

    code, _, err = run(capsys, "models", "delete", "pets", "--cascade")

    assert code == 1
    assert "deleting image fpgaflow/pets:2 failed: the engine refused: conflict" in err
    assert "Deleted: service pets; still there and intact: image fpgaflow/pets:2, model version pets@2" in err
    assert services.saved_placements(settings) == {}  # the service went first ...
    assert engine.images == [image] and versions(settings) == ["1", "2"]  # ... its image and version are whole
    assert (settings.home / "services" / "pets" / "2" / "service.json").is_file()

    engine.fail_removal = False
    code, out, _ = run(capsys, "models", "delete", "pets", "--cascade", "--json")
    assert code == 0
    assert json.loads(out)["deleted"] == ["image fpgaflow/pets:2", "model version pets@2"]
    assert engine.images == [] and versions(settings) == ["1"]
    assert not (settings.home / "services" / "pets" / "2").exists()


def test_deleting_the_last_version_removes_the_registered_model(home, capsys):
    settings, _ = home
    assert run(capsys, "models", "delete", "pets@2")[1].strip() == "deleted model version pets@2"
    assert run(capsys, "models", "delete", "pets")[0] == 0
    assert json.loads(run(capsys, "models", "list", "--json")[1]) == []


def test_without_a_docker_engine_the_version_is_deleted_and_the_unchecked_images_said(home, capsys, monkeypatch):
    def unreachable(settings=None):
        raise EngineUnreachable("no Docker engine reachable at unix:///var/run/docker.sock")

    monkeypatch.setattr(images, "list_images", unreachable)
    code, out, _ = run(capsys, "models", "delete", "pets@2")
    assert code == 0
    assert "note: images not checked: no Docker engine reachable" in out


def test_an_image_a_service_runs_is_kept_unless_cascade(home, capsys):
    settings, engine = home
    image = engine.add("pets", "1")
    place(settings, "pets", "1", image=image.tags[0])

    code, out, _ = run(capsys, "images", "list")
    assert code == 0 and "fpgaflow/pets:1" in out and "123" in out and out.rstrip().endswith("pets")

    code, _, err = run(capsys, "images", "delete", "fpgaflow/pets:1")
    assert code == 1 and "image fpgaflow/pets:1 is still used by service pets" in err
    assert engine.images == [image]

    code, out, _ = run(capsys, "images", "delete", image.id, "--cascade")
    assert code == 0 and out.splitlines() == ["deleted service pets", "deleted image fpgaflow/pets:1"]
    assert engine.images == [] and versions(settings) == ["1", "2"]


def test_services_list_the_saved_state_while_the_gateway_is_down(home, capsys):
    settings, _ = home
    assert run(capsys, "services", "list")[1].strip() == "no services on the cluster"
    place(settings, "pets", "1")
    [service] = json.loads(run(capsys, "services", "list", "--json")[1])
    assert (service["name"], service["versions"], service["running"]) == ("pets", ["1"], False)
    assert "gateway down" in run(capsys, "services", "list")[1]
    code, _, err = run(capsys, "services", "show", "cats")
    assert code == 2 and "no service 'cats' on the cluster (services: pets)" in err


def test_a_service_directory_outside_the_home_is_left_alone(home, capsys, tmp_path):
    settings, _ = home
    config = PipelineConfig(data_dir=tmp_path / "pets", model_name="pets")
    version = register_tiny_service(settings, config, tmp_path / "elsewhere", seed=3)
    assert run(capsys, "models", "delete", f"pets@{version}")[0] == 0
    assert (tmp_path / "elsewhere" / "pets" / version / "service.json").is_file()
    assert versions(settings) == ["1", "2"]
