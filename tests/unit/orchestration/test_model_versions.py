"""Resolving registered versions by alias or number, and finding their service directory."""

from __future__ import annotations

import shutil

import pytest

from fpgaflow.fpga_runtime.errors import InvalidInput, ModelNotFound
from fpgaflow.fpga_runtime.service import load_service
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.packaging.service_dir import default_service_dir
from fpgaflow.tasks.registry.lookup import find_champion, resolve_version
from fpgaflow.tasks.registry.version_state import CANDIDATE_ALIAS, CHAMPION_ALIAS
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.registered_service import register_tiny_service


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Model 'pets': version 1 champion, version 2 candidate whose gates failed."""
    settings = PipelineSettings(home=tmp_path_factory.mktemp("home"))
    config = PipelineConfig(data_dir=tmp_path_factory.mktemp("data"), model_name="pets")
    root = tmp_path_factory.mktemp("services")
    register_tiny_service(settings, config, root, seed=1, aliases=(CHAMPION_ALIAS,))
    register_tiny_service(settings, config, root, seed=2, gates_passed=False, aliases=(CANDIDATE_ALIAS,))
    return settings


def test_alias_and_number_resolve_to_the_same_version(registry):
    by_alias = resolve_version("pets", CHAMPION_ALIAS, registry)
    by_number = resolve_version("pets", 1, registry)

    assert by_alias == by_number
    assert (by_alias.version, by_alias.aliases, by_alias.gates_passed) == ("1", (CHAMPION_ALIAS,), True)
    assert load_service(by_alias.service_dir).version == "1"
    assert by_alias.label == "pets version 1 (champion)"


def test_gate_results_come_from_the_registry(registry):
    candidate = resolve_version("pets", CANDIDATE_ALIAS, registry)

    assert (candidate.version, candidate.gates_passed) == ("2", False)


def test_unknown_alias_names_the_aliases_there_are(registry):
    with pytest.raises(ModelNotFound, match=r"no alias 'production' \(its aliases: candidate, champion\)"):
        resolve_version("pets", "production", registry)


def test_unknown_model_and_unknown_number_are_not_found(registry):
    with pytest.raises(ModelNotFound, match="no registered model named 'fish'"):
        resolve_version("fish", CHAMPION_ALIAS, registry)
    with pytest.raises(ModelNotFound, match="no version 9"):
        resolve_version("pets", "9", registry)
    with pytest.raises(InvalidInput, match="empty"):
        resolve_version("pets", " ", registry)


def test_a_missing_service_directory_is_downloaded_from_the_run(registry):
    recorded = resolve_version("pets", "2", registry).service_dir
    original = {path.name: path.read_bytes() for path in recorded.iterdir()}
    shutil.rmtree(recorded)

    fetched = resolve_version("pets", "2", registry).service_dir

    assert fetched == default_service_dir("pets", "2", registry)
    assert {path.name: path.read_bytes() for path in fetched.iterdir()} == original
    assert resolve_version("pets", "2", registry).service_dir == fetched


def test_champion_or_none(registry):
    assert find_champion("pets", registry).version == "1"
    assert find_champion("fish", registry) is None
