"""The service directory: written from the converted stages, validated, placed atomically."""

from __future__ import annotations

import json
import shutil

import pytest

from fpgaflow.fpga_runtime.errors import InvalidServiceDefinition
from fpgaflow.fpga_runtime.service import SERVICE_FILE, load_service
from fpgaflow.tasks.conversion.onnx_stages import CPU_STAGE_FILE, FPGA_STAGE_FILE
from fpgaflow.tasks.packaging.service_dir import default_service_dir, package_service
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.keras_stages import CLASS_NAMES, FEATURE_DIM, INPUT_SIZE

SOURCE = {"mlflow_run_id": "0123abcd", "dataset_fingerprint": "f" * 64}


def package(converted, spec, destination, **overrides):
    arguments = {
        "name": "pets",
        "version": "3",
        "class_names": CLASS_NAMES,
        "preprocessing": spec,
        "numeric_format": "fp32",
        "fpga_onnx": converted.fpga_onnx,
        "cpu_onnx": converted.cpu_onnx,
        "source": SOURCE,
        "destination": destination,
    }
    return package_service(**(arguments | overrides))


def test_service_directory_holds_a_valid_definition_and_both_stages(converted, preprocess_spec, tmp_path):
    service_dir = package(converted, preprocess_spec, tmp_path / "pets" / "3")
    assert sorted(path.name for path in service_dir.iterdir()) == sorted([SERVICE_FILE, FPGA_STAGE_FILE, CPU_STAGE_FILE])
    service = load_service(service_dir)
    assert (service.name, service.version, service.class_names) == ("pets", "3", CLASS_NAMES)
    assert service.preprocessing == preprocess_spec
    assert service.default_output == "probabilities"
    assert service.source == SOURCE
    featurizer, classifier = service.stages
    assert (featurizer.target, featurizer.file, featurizer.numeric_format) == ("FPGA", FPGA_STAGE_FILE, "fp32")
    assert (classifier.target, classifier.file) == ("CPU", CPU_STAGE_FILE)
    assert [(t.name, t.shape) for t in featurizer.inputs] == [("input", (-1, INPUT_SIZE, INPUT_SIZE, 3))]
    assert [(t.name, t.shape) for t in featurizer.outputs] == [("features", (-1, FEATURE_DIM))]
    assert [(t.name, t.shape) for t in classifier.outputs] == [("probabilities", (-1, len(CLASS_NAMES)))]


def test_default_location_is_under_the_home(converted, preprocess_spec, tmp_path):
    settings = PipelineSettings(home=tmp_path)
    service_dir = package_service(
        name="pets",
        version="4",
        class_names=CLASS_NAMES,
        preprocessing=preprocess_spec,
        numeric_format="fp32",
        fpga_onnx=converted.fpga_onnx,
        cpu_onnx=converted.cpu_onnx,
        source=SOURCE,
        settings=settings,
    )
    assert service_dir == tmp_path / "services" / "pets" / "4" == default_service_dir("pets", "4", settings)
    assert load_service(service_dir).version == "4"


def test_a_failure_midway_leaves_no_service_directory_and_no_partial_files(converted, preprocess_spec, tmp_path):
    parent = tmp_path / "pets"
    with pytest.raises(
        InvalidServiceDefinition, match="output 'probabilities' has 3 scores per image but there are 2 class names"
    ):
        package(converted, preprocess_spec, parent / "3", class_names=("cat", "dog"))
    assert list(parent.iterdir()) == []


def test_a_failed_retry_keeps_the_previous_service_directory(converted, preprocess_spec, tmp_path):
    destination = tmp_path / "pets" / "3"
    package(converted, preprocess_spec, destination)
    before = (destination / SERVICE_FILE).read_text()
    wrong_size = preprocess_spec.model_copy(update={"crop": 48, "resize_to": 55})
    with pytest.raises(
        InvalidServiceDefinition,
        match=r"takes 'input' of shape \(-1, 32, 32, 3\), but the preprocessing produces images of shape \(48, 48, 3\)",
    ):
        package(converted, preprocess_spec, destination, preprocessing=wrong_size)
    assert (destination / SERVICE_FILE).read_text() == before
    assert [path.name for path in destination.parent.iterdir()] == ["3"]


def test_a_retry_replaces_the_directory(converted, preprocess_spec, tmp_path):
    destination = tmp_path / "pets" / "3"
    package(converted, preprocess_spec, destination, numeric_format="fp32")
    package(converted, preprocess_spec, destination, numeric_format="int8")
    assert load_service(destination).numeric_format == "int8"
    assert [path.name for path in destination.parent.iterdir()] == ["3"]


def test_a_missing_stage_file_is_named(converted, preprocess_spec, tmp_path):
    with pytest.raises(FileNotFoundError, match="stage file .*missing.onnx does not exist"):
        package(converted, preprocess_spec, tmp_path / "s", cpu_onnx=tmp_path / "missing.onnx")


def test_a_corrupt_onnx_file_is_refused(converted, preprocess_spec, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07not a protobuf at all")
    with pytest.raises(InvalidServiceDefinition, match="cpu_stage.onnx is not a readable ONNX model"):
        package(converted, preprocess_spec, tmp_path / "s", cpu_onnx=broken)
    assert not (tmp_path / "s").exists()


@pytest.fixture
def service_copy(converted, preprocess_spec, tmp_path):
    source = package(converted, preprocess_spec, tmp_path / "original")
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    return copy


def test_load_service_names_invalid_json(service_copy):
    (service_copy / SERVICE_FILE).write_text("{not json")
    with pytest.raises(InvalidServiceDefinition, match="is not valid JSON"):
        load_service(service_copy)


def test_load_service_names_the_broken_field(service_copy):
    raw = json.loads((service_copy / SERVICE_FILE).read_text())
    raw["stages"][0]["target"] = "GPU"
    raw["default_output"] = "logits"
    (service_copy / SERVICE_FILE).write_text(json.dumps(raw))
    with pytest.raises(InvalidServiceDefinition) as failure:
        load_service(service_copy)
    assert "stages.0.target" in str(failure.value)


def test_load_service_names_a_missing_onnx_file(service_copy):
    (service_copy / CPU_STAGE_FILE).unlink()
    with pytest.raises(InvalidServiceDefinition, match=r"names ONNX files that are not in .*: \['cpu_stage.onnx'\]"):
        load_service(service_copy)


def test_load_service_refuses_a_directory_without_service_json(tmp_path):
    with pytest.raises(InvalidServiceDefinition, match="service.json is missing"):
        load_service(tmp_path)


def test_the_stage_records_the_block_size_its_graph_was_prepared_with(converted, preprocess_spec, tmp_path):
    import numpy as np

    from fpgaflow.tasks.numerics.formats import prepare_format_file

    calibration = np.random.default_rng(0).normal(size=(4, INPUT_SIZE, INPUT_SIZE, 3)).astype(np.float32)
    msfp9 = prepare_format_file(converted.fpga_onnx, "msfp9", tmp_path / "msfp9.onnx", calibration, block_size=8)
    service_dir = package(converted, preprocess_spec, tmp_path / "msfp9", numeric_format="msfp9", fpga_onnx=msfp9)
    featurizer, classifier = load_service(service_dir).stages
    assert (featurizer.numeric_format, featurizer.block_size, classifier.block_size) == ("msfp9", 8, None)
    with pytest.raises(InvalidServiceDefinition, match="declares numeric format 'int8' but the graph was prepared in 'msfp9'"):
        package(converted, preprocess_spec, tmp_path / "int8", numeric_format="int8", fpga_onnx=msfp9)
