"""Pipeline steps under faults: a full disk mid-write, MLflow down, no Docker engine, a registry call failing.

Each fails loudly with a message naming the problem, and leaves nothing half-made behind: no
partial service directory, no torn file, no duplicate model version, no alias on a version whose
registration is incomplete; a re-run after the fault completes.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.fpga_runtime.service import load_service
from fpgaflow.tasks import files
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.conversion.onnx_stages import ConversionReport, StageParity
from fpgaflow.tasks.data.sample_data import write_sample_data
from fpgaflow.tasks.packaging import service_dir
from fpgaflow.tasks.packaging.image_build import build_image
from fpgaflow.tasks.packaging.service_dir import package_service
from fpgaflow.tasks.registry.client import TrackingUnavailable, mlflow_client
from fpgaflow.tasks.registry.promotion import PromotionRefused, promote
from fpgaflow.tasks.registry.publication import publish_version
from fpgaflow.tasks.registry.registration import register_trained_model
from fpgaflow.tasks.registry.runs import start_pipeline_run
from fpgaflow.tasks.registry.version_state import (
    CANDIDATE_ALIAS,
    TAG_GATES,
    TAG_STATUS,
    VersionIncomplete,
    VersionStatus,
    gates_passed,
)
from fpgaflow.tasks.settings import PipelineSettings
from mlflow import MlflowClient
from tests.fixtures.keras_stages import save_stages
from tests.fixtures.tiny_service import CLASS_NAMES, INPUT_SIZE, write_tiny_service

REPO = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.startswith("."))


@pytest.fixture
def stages(tmp_path) -> Path:
    return write_tiny_service(tmp_path / "stages")


def package(stages: Path, destination: Path, format_name: str = "fp32") -> Path:
    return package_service(
        name="tiny",
        version="1",
        class_names=CLASS_NAMES,
        preprocessing=PreprocessSpec.for_input_size(INPUT_SIZE),
        numeric_format=format_name,
        fpga_onnx=stages / "featurizer.onnx",
        cpu_onnx=stages / "head.onnx",
        source={"run_id": "r1"},
        destination=destination,
    )


def test_a_full_disk_mid_packaging_leaves_no_service_directory_and_a_rerun_completes(stages, tmp_path, monkeypatch):
    destination = tmp_path / "services" / "tiny" / "1"
    with monkeypatch.context() as patch:
        patch.setattr(service_dir, "load_service", disk_full)  # after every file of the new directory is written
        with pytest.raises(OSError) as raised:
            package(stages, destination)
    assert raised.value.errno == errno.ENOSPC
    assert not destination.exists() and leftovers(destination.parent) == []

    assert load_service(package(stages, destination)).name == "tiny"


def test_a_failed_repackaging_keeps_the_previous_service_directory_whole(stages, tmp_path, monkeypatch):
    destination = package(stages, tmp_path / "services" / "tiny" / "1")
    before = {path.name: path.read_bytes() for path in destination.iterdir()}
    with monkeypatch.context() as patch:
        patch.setattr(service_dir, "load_service", disk_full)
        with pytest.raises(OSError):
            package(stages, destination, format_name="int8")
    assert {path.name: path.read_bytes() for path in destination.iterdir()} == before
    assert load_service(destination).stages[0].numeric_format == "fp32"
    assert leftovers(destination.parent) == []


class _FullDiskHandle:
    def __init__(self, handle):
        self._handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._handle.close()

    def write(self, text):
        self._handle.write(text[: len(text) // 2])
        disk_full()


def test_a_full_disk_mid_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = files.write_text_atomic(tmp_path / "summary.json", '{"version": 1}')
    real_fdopen = os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda descriptor, mode: _FullDiskHandle(real_fdopen(descriptor, mode)))
    with pytest.raises(OSError) as raised:
        files.write_text_atomic(target, '{"version": 2, "much": "more text"}')
    assert raised.value.errno == errno.ENOSPC
    assert target.read_text() == '{"version": 1}'
    assert [path.name for path in tmp_path.iterdir()] == ["summary.json"]


def test_mlflow_down_fails_the_tracking_step_naming_the_server(tmp_path):
    uri = f"http://127.0.0.1:{closed_port()}"
    settings = PipelineSettings(home=tmp_path / "home", mlflow_tracking_uri=uri, mlflow_http_retries=0)
    with pytest.raises(TrackingUnavailable) as raised:
        start_pipeline_run(PipelineConfig(data_dir=tmp_path), "fingerprint", settings)
    assert str(raised.value).startswith(f"the MLflow tracking server at {uri} did not answer: [Errno 111] Connection refused")


@pytest.mark.slow
def test_fpgaflow_run_with_mlflow_down_ends_with_one_line_naming_the_server(tmp_path):
    data_dir = tmp_path / "digits"
    write_sample_data(data_dir, size=32, per_class=10)
    uri = f"http://127.0.0.1:{closed_port()}"
    environment = {
        **os.environ,
        "FPGAFLOW_HOME": str(tmp_path / "home"),
        "FPGAFLOW_MLFLOW_TRACKING_URI": uri,
        "FPGAFLOW_MLFLOW_HTTP_RETRIES": "0",
    }
    environment.pop("PREFECT_HOME", None)
    environment.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fpgaflow.flows",
            "run",
            str(data_dir),
            "--until",
            "train",
            "--input-size",
            "32",
            "--weights",
            "none",
        ],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        f"fpgaflow run: the MLflow tracking server at {uri} did not answer: [Errno 111] Connection refused "
        "(start it, or point FPGAFLOW_MLFLOW_TRACKING_URI at a running one)"
    ]


def test_an_unreachable_docker_engine_is_reported_with_its_address_and_no_image(tmp_path, image_home):
    service_dir = write_tiny_service(tmp_path / "service")
    address = f"tcp://127.0.0.1:{closed_port()}"
    settings = PipelineSettings(home=image_home, docker_host=address, docker_timeout=5)
    result = build_image(service_dir, base_image="python:3.11-slim", output_dir=tmp_path / "image", settings=settings)
    assert not result.built and address in result.reason
    assert (tmp_path / "image" / "context" / "service" / "service.json").is_file()


# -- registration and publication: a fault at each MLflow call, then a re-run ----------------------------

DATABASE_LOCKED = "(sqlite3.OperationalError) database is locked"
FINGERPRINT = "ef" * 32
PASSING = {"fp32": {"accuracy": 0.9, "delta": 0.0, "passed": True}}
MODEL_NAMES = itertools.count(1)
GONE_SERVER = f"http://127.0.0.1:{closed_port()}"


@dataclass(frozen=True)
class Fault:
    """``MlflowClient.<method>`` fails once, on its first call that ``hits``; after its work when ``answer_lost``.

    ``fail`` raises the error, given the call's arguments; ``cause`` is how the step's message names it.
    """

    method: str
    fail: Callable[..., None]
    cause: str
    hits: Callable[..., bool] = lambda *_args, **_kwargs: True
    answer_lost: bool = False

    def inject(self, monkeypatch) -> None:
        real = getattr(MlflowClient, self.method)
        pending = [True]

        def faulty(client, *args, **kwargs):
            if not (pending and self.hits(*args, **kwargs)):
                return real(client, *args, **kwargs)
            pending.clear()
            if self.answer_lost:
                real(client, *args, **kwargs)
            self.fail(*args, **kwargs)
            raise AssertionError(f"the fault in {self.method} raised nothing")

        monkeypatch.setattr(MlflowClient, self.method, faulty)


def raising(error: Exception) -> Callable[..., None]:
    def fail(*_args, **_kwargs):
        raise error

    return fail


def locked(method: str, **options) -> Fault:
    return Fault(method, raising(MlflowException(DATABASE_LOCKED)), DATABASE_LOCKED, **options)


def disk_full_at(method: str) -> Fault:
    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return Fault(method, raising(error), str(error))


def server_gone(method: str, **options) -> Fault:
    """The error MLflow itself raises for the call when the tracking server has stopped answering."""

    def fail(*args, **kwargs):
        getattr(MlflowClient(tracking_uri=GONE_SERVER, registry_uri=GONE_SERVER), method)(*args, **kwargs)

    return Fault(
        method, fail, f"the MLflow tracking server at {GONE_SERVER} did not answer: [Errno 111] Connection refused", **options
    )


def tagging(key: str, value: str | None = None) -> Callable[..., bool]:
    return lambda _name, _version, tag_key, tag_value: tag_key == key and value in (None, tag_value)


REGISTRATION_FAULTS = {
    "logging-the-model": locked("create_logged_model"),
    "creating-the-version": locked("create_model_version"),
    "answer-to-creating-the-version-lost": locked("create_model_version", answer_lost=True),
    "writing-the-model-card": locked("update_model_version"),
    "server-gone-before-the-model-card": server_gone("update_model_version"),
    "marking-it-registered": locked("set_model_version_tag", hits=tagging(TAG_STATUS, VersionStatus.REGISTERED)),
}
PUBLISHING, PUBLISHED = VersionStatus.PUBLISHING, VersionStatus.PUBLISHED
PUBLICATION_FAULTS = [  # the fault, and the status it leaves (None: the one before publication)
    pytest.param(locked("set_model_version_tag", hits=tagging(TAG_STATUS, PUBLISHING)), None, id="marking-it-publishing"),
    pytest.param(disk_full_at("log_artifacts"), PUBLISHING, id="uploading-the-service"),
    pytest.param(disk_full_at("log_text"), PUBLISHING, id="uploading-the-model-card"),
    pytest.param(locked("update_model_version"), PUBLISHING, id="writing-the-description"),
    pytest.param(server_gone("update_model_version"), PUBLISHING, id="server-gone-before-the-description"),
    pytest.param(locked("set_model_version_tag", hits=tagging(TAG_GATES)), PUBLISHING, id="tagging-the-gates"),
    pytest.param(locked("set_model_version_tag", hits=tagging(TAG_STATUS, PUBLISHED)), PUBLISHING, id="marking-it-published"),
    pytest.param(locked("set_registered_model_alias"), PUBLISHED, id="giving-it-candidate"),
]
TAKING_CANDIDATE_AWAY = locked("delete_registered_model_alias")


@pytest.fixture(scope="module")
def registry_settings(tmp_path_factory) -> PipelineSettings:
    """One SQLite MLflow store for the module; each test registers its own model. No HTTP retries: the
    server-gone faults call a closed port."""
    return PipelineSettings(home=tmp_path_factory.mktemp("registry-home"), mlflow_http_retries=0)


@pytest.fixture(scope="module")
def client(registry_settings) -> MlflowClient:
    return mlflow_client(registry_settings)


@pytest.fixture(scope="module")
def keras_stages(tmp_path_factory) -> tuple[Path, Path]:
    return save_stages(tmp_path_factory.mktemp("keras-stages"), seed=1)


@pytest.fixture
def model_name() -> str:
    return f"pets-{next(MODEL_NAMES)}"


def trained_run(settings: PipelineSettings, data_dir: Path, model_name: str) -> str:
    return start_pipeline_run(PipelineConfig(data_dir=data_dir, model_name=model_name), FINGERPRINT, settings)


def conversion_report(service_dir: Path) -> ConversionReport:
    parity = StageParity(max_abs_diff=1e-6, output_scale=1.0, scaled_diff=1e-6, top1_agreement=1.0)
    return ConversionReport(
        opset=17,
        images=4,
        tolerance=1e-4,
        min_top1_agreement=0.99,
        fpga_onnx=service_dir / "featurizer.onnx",
        cpu_onnx=service_dir / "head.onnx",
        stages={"fpga": parity, "end_to_end": parity},
        problems=(),
    )


def publish(settings: PipelineSettings, name: str, version: str, service_dir: Path):
    return publish_version(name, version, service_dir, conversion_report(service_dir), PASSING, settings)


def versions_of(client: MlflowClient, name: str) -> list:
    return client.search_model_versions(f"name = '{name}'")


def numbers_of(client: MlflowClient, name: str) -> list[str]:
    return [str(version.version) for version in versions_of(client, name)]


def assert_only_complete_versions_hold_aliases(client: MlflowClient, name: str, settings: PipelineSettings) -> None:
    """No alias on a version short of ``published`` with passed gates, and promote refuses such a version.

    Each version is read on its own: a search returns versions without their aliases."""
    for found in versions_of(client, name):
        version = client.get_model_version(name, found.version)
        if not gates_passed(version):
            assert version.aliases == [], f"version {version.version} ({version.tags.get(TAG_STATUS)}) holds {version.aliases}"
            with pytest.raises(PromotionRefused):
                promote(name, version.version, settings)


def assert_published(client: MlflowClient, name: str, version: str, run_id: str) -> None:
    model_version = client.get_model_version(name, version)
    tags = model_version.tags
    assert tags[TAG_STATUS] == VersionStatus.PUBLISHED and tags[TAG_GATES] == "passed"
    assert tags["fpgaflow.run_id"] == run_id and tags["fpgaflow.service_uri"] == f"runs:/{run_id}/service"
    assert tags["fpgaflow.numeric_format"] == "fp32" and tags["fpgaflow.gate.fp32"].startswith("passed: ")
    assert "served in `fp32`" in model_version.description
    assert model_version.aliases == [CANDIDATE_ALIAS]
    assert "model_card.md" in [item.path for item in client.list_artifacts(run_id)]
    assert sorted(item.path for item in client.list_artifacts(run_id, "service")) == [
        "service/featurizer.onnx",
        "service/head.onnx",
        "service/service.json",
    ]


@pytest.mark.parametrize("fault", REGISTRATION_FAULTS.values(), ids=REGISTRATION_FAULTS.keys())
def test_a_fault_mid_registration_fails_the_step_and_a_rerun_completes_the_same_single_version(
    fault, registry_settings, client, keras_stages, model_name, tmp_path, monkeypatch
):
    run_id = trained_run(registry_settings, tmp_path, model_name)
    fault.inject(monkeypatch)
    with pytest.raises(
        VersionIncomplete,
        match=rf"^registering {model_name} .*failed \(.*{re.escape(fault.cause)}\); "
        r"a re-run of the pipeline completes it$",
    ):
        register_trained_model(run_id, model_name, *keras_stages, CLASS_NAMES, registry_settings)
    left = versions_of(client, model_name)
    assert [version.tags[TAG_STATUS] for version in left] in ([], [VersionStatus.REGISTERING])
    assert_only_complete_versions_hold_aliases(client, model_name, registry_settings)

    registered = register_trained_model(run_id, model_name, *keras_stages, CLASS_NAMES, registry_settings)
    assert numbers_of(client, model_name) == [registered.version]
    if left:
        assert registered.version == str(left[0].version)
    version = client.get_model_version(model_name, registered.version)
    assert version.tags[TAG_STATUS] == VersionStatus.REGISTERED and version.tags["fpgaflow.run_id"] == run_id
    assert version.description.startswith(f"# {model_name} version {registered.version}\n")


@pytest.mark.parametrize("fault, status_left", PUBLICATION_FAULTS)
@pytest.mark.parametrize("candidate_before", [False, True], ids=["first-publication", "republication"])
def test_a_fault_mid_publication_leaves_no_candidate_without_its_gates_and_a_rerun_completes_it(
    fault, status_left, candidate_before, registry_settings, client, keras_stages, model_name, tmp_path, monkeypatch
):
    run_id = trained_run(registry_settings, tmp_path, model_name)
    version = register_trained_model(run_id, model_name, *keras_stages, CLASS_NAMES, registry_settings).version
    service_dir = write_tiny_service(tmp_path / "service", name=model_name, version=version)
    if candidate_before:
        assert publish(registry_settings, model_name, version, service_dir).aliases == (CANDIDATE_ALIAS,)
    status_before = client.get_model_version(model_name, version).tags[TAG_STATUS]
    fault.inject(monkeypatch)
    with pytest.raises(
        VersionIncomplete,
        match=rf"^publishing {model_name} version {version} failed \("
        rf".*{re.escape(fault.cause)}\); a re-run of the pipeline completes it$",
    ):
        publish(registry_settings, model_name, version, service_dir)
    assert client.get_model_version(model_name, version).tags[TAG_STATUS] == (status_left or status_before)
    assert_only_complete_versions_hold_aliases(client, model_name, registry_settings)

    published = publish(registry_settings, model_name, version, service_dir)
    assert numbers_of(client, model_name) == [version]
    assert published.gates_passed and published.aliases == (CANDIDATE_ALIAS,)
    assert_published(client, model_name, version, run_id)


def test_a_fault_taking_candidate_away_keeps_the_complete_publication_and_a_rerun_completes_the_new_one(
    registry_settings, client, keras_stages, model_name, tmp_path, monkeypatch
):
    run_id = trained_run(registry_settings, tmp_path, model_name)
    version = register_trained_model(run_id, model_name, *keras_stages, CLASS_NAMES, registry_settings).version
    service_dir = write_tiny_service(tmp_path / "service", name=model_name, version=version)
    publish(registry_settings, model_name, version, service_dir)
    TAKING_CANDIDATE_AWAY.inject(monkeypatch)
    with pytest.raises(VersionIncomplete, match=re.escape(DATABASE_LOCKED)):
        publish(registry_settings, model_name, version, service_dir)
    untouched = client.get_model_version(model_name, version)
    assert untouched.tags[TAG_STATUS] == VersionStatus.PUBLISHED and untouched.aliases == [CANDIDATE_ALIAS]

    publish(registry_settings, model_name, version, service_dir)
    assert_published(client, model_name, version, run_id)
