"""What `pip install fpgaflow` puts into site-packages: one top-level name, every package, no missing data."""

from __future__ import annotations

import tomllib
import zipfile
from pathlib import Path

import pytest

from fpgaflow.tasks.packaging.wheelhouse import build_project_wheel

REPO = Path(__file__).resolve().parents[2]
PACKAGE_FOLDERS = ("fpga_runtime", "tasks", "flows", "benchmarks")


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    wheel = build_project_wheel(tmp_path_factory.mktemp("wheel"), REPO)
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_claims_one_top_level_name(wheel_names):
    top_level = {name.split("/")[0] for name in wheel_names}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"fpgaflow"}


def test_every_module_of_the_repository_is_in_the_wheel(wheel_names):
    sources = sorted(path.relative_to(REPO) for folder in PACKAGE_FOLDERS for path in (REPO / folder).rglob("*.py"))
    assert len(sources) > 100
    missing = [str(path) for path in sources if f"fpgaflow/{path.as_posix()}" not in wheel_names]
    assert missing == []


def test_package_data_names_only_files_that_exist_and_ships_them(wheel_names):
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = setuptools["package-dir"]
    for package, patterns in setuptools["package-data"].items():
        for pattern in patterns:
            files = sorted((REPO / folders[package]).glob(pattern))
            assert files, f"package-data pattern {package}: {pattern} matches no file"
            for path in files:
                assert f"{package.replace('.', '/')}/{path.relative_to(REPO / folders[package]).as_posix()}" in wheel_names
