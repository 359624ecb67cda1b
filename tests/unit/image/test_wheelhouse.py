"""The fpgaflow wheel and the wheelhouse key and platform tags."""

from __future__ import annotations

import hashlib

from packaging.requirements import Requirement

from fpgaflow.tasks.packaging.wheelhouse import (
    build_project_wheel,
    copy_project_sources,
    ensure_wheelhouse,
    platform_tags,
    project_root,
    wheel_requirements,
    wheelhouse_key,
)


def test_the_wheel_declares_the_runtime_requirements_and_none_of_the_pipeline_extras(tmp_path):
    wheel = build_project_wheel(tmp_path)
    names = {Requirement(line).name.lower() for line in wheel_requirements(wheel)}
    assert {"onnxruntime", "grpcio", "grpcio-health-checking", "numpy", "protobuf", "pillow", "pyyaml"} <= names
    assert not names & {"tensorflow", "prefect", "mlflow", "docker", "pandas", "great-expectations"}


def test_the_same_sources_give_the_same_wheel_bytes_and_a_cached_wheel_is_reused(tmp_path):
    sources = tmp_path / "sources"
    copy_project_sources(project_root(), sources)  # a snapshot: the work tree may change while the test runs
    first = build_project_wheel(tmp_path / "a", root=sources)
    second = build_project_wheel(tmp_path / "b", root=sources)
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    stamp = first.stat().st_mtime_ns
    assert build_project_wheel(tmp_path / "a", root=sources) == first
    assert first.stat().st_mtime_ns == stamp


def test_platform_tags_cover_every_glibc_up_to_the_base_images():
    tags = platform_tags("x86_64", glibc_minor=36)
    assert {"manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "manylinux_2_36_x86_64", "manylinux2014_x86_64"} <= set(tags)
    assert "manylinux_2_37_x86_64" not in tags
    assert platform_tags("arm64", glibc_minor=28)[0] == "manylinux_2_28_aarch64"


def test_the_wheelhouse_key_changes_with_requirements_python_and_platform():
    tags = platform_tags("x86_64")
    base = wheelhouse_key(["numpy<3", "grpcio==1.85.1"], "3.11", tags)
    assert base == wheelhouse_key(["grpcio==1.85.1", "numpy<3"], "3.11", tags)
    assert base != wheelhouse_key(["numpy<3", "grpcio==1.85.0"], "3.11", tags)
    assert base != wheelhouse_key(["numpy<3", "grpcio==1.85.1"], "3.12", tags)
    assert base != wheelhouse_key(["numpy<3", "grpcio==1.85.1"], "3.11", platform_tags("aarch64"))


def test_a_wheelhouse_is_downloaded_once_per_key(tmp_path):
    wheelhouse = ensure_wheelhouse(["prometheus-client>=0.20"], "3.11", tmp_path)
    assert [path.name.split("-")[0] for path in wheelhouse.glob("*.whl")] == ["prometheus_client"]
    marker = wheelhouse / "requirements.txt"
    stamp = marker.stat().st_mtime_ns
    assert ensure_wheelhouse(["prometheus-client>=0.20"], "3.11", tmp_path) == wheelhouse
    assert marker.stat().st_mtime_ns == stamp
    assert [path.name for path in tmp_path.iterdir()] == [wheelhouse.name]
