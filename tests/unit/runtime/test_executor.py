import json

import numpy as np
import pytest

from fpgaflow.fpga_runtime.errors import InvalidInput, InvalidServiceDefinition
from fpgaflow.fpga_runtime.executor import CPU, FPGA, PREPROCESS, ServiceExecutor
from fpgaflow.fpga_runtime.preprocessing import preprocess
from fpgaflow.fpga_runtime.service import load_service
from tests.fixtures.tiny_service import CLASS_NAMES, INPUT_SIZE, encoded_images, reference_probabilities, write_tiny_service


@pytest.fixture(scope="module")
def service_dir(tmp_path_factory):
    return write_tiny_service(tmp_path_factory.mktemp("service") / "tiny")


@pytest.fixture(scope="module")
def images():
    return encoded_images(3)


@pytest.fixture()
def executor(service_dir):
    timings = []
    loaded = ServiceExecutor(service_dir, "arria10", on_timing=lambda kind, seconds: timings.append((kind, seconds)))
    loaded.timings = timings
    yield loaded
    loaded.close()


def test_encoded_images_give_the_onnx_stages_result_in_one_pass(executor, service_dir, images):
    outputs = executor.predict_encoded(images)
    assert list(outputs) == ["probabilities"]
    np.testing.assert_allclose(outputs["probabilities"], reference_probabilities(service_dir, images), rtol=1e-6, atol=1e-7)
    assert [kind for kind, _ in executor.timings] == [PREPROCESS, FPGA, CPU]
    assert all(seconds >= 0 for _, seconds in executor.timings)
    assert executor.device.stats().runs == 1


def test_preprocessed_batch_gives_the_same_result(executor, images):
    batch = np.stack([preprocess(data, executor.service.preprocessing) for data in images])
    np.testing.assert_array_equal(
        executor.predict_preprocessed(batch)["probabilities"], executor.predict_encoded(images)["probabilities"]
    )


def test_png_and_jpeg_both_decode(executor):
    outputs = executor.predict_encoded(encoded_images(1, image_format="PNG") + encoded_images(1, image_format="JPEG"))
    assert outputs["probabilities"].shape == (2, len(CLASS_NAMES))
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("batch", "problem"),
    [
        (np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), np.float64), "must be float32, got float64"),
        (np.zeros((1, INPUT_SIZE, INPUT_SIZE), np.float32), "must have shape [-1, 32, 32, 3]"),
        (np.zeros((2, 16, 16, 3), np.float32), "got [2, 16, 16, 3]"),
        (np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.float32), "the batch is empty"),
    ],
)
def test_bad_preprocessed_batches_are_invalid_input(executor, batch, problem):
    with pytest.raises(InvalidInput) as raised:
        executor.predict_preprocessed(batch)
    assert problem in str(raised.value)


def test_undecodable_image_is_named_by_its_position(executor, images):
    with pytest.raises(InvalidInput, match="image 1: not a decodable image"):
        executor.predict_encoded([images[0], b"not an image"])


def test_batch_limit(service_dir, images):
    small = ServiceExecutor(service_dir, "arria10", max_batch_size=2)
    try:
        with pytest.raises(InvalidInput, match="batch of 3 exceeds the limit of 2"):
            small.predict_encoded(images)
        with pytest.raises(InvalidInput, match="the batch is empty"):
            small.predict_encoded([])
    finally:
        small.close()


def test_close_releases_the_device(service_dir):
    executor = ServiceExecutor(service_dir, "arria10")
    device = executor.device
    executor.close()
    assert device.loaded is None


def _rewrite_service(source, target, change):
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    raw = json.loads((target / "service.json").read_text())
    change(raw)
    (target / "service.json").write_text(json.dumps(raw))
    return target


def test_two_fpga_stages_are_refused(service_dir, tmp_path):
    def both_on_fpga(raw):
        raw["stages"][1]["target"] = "FPGA"

    with pytest.raises(InvalidServiceDefinition, match="2 FPGA stages"):
        ServiceExecutor(_rewrite_service(service_dir, tmp_path / "two", both_on_fpga), "arria10")


def test_graph_that_does_not_match_service_json_is_refused(service_dir, tmp_path):
    def rename_output(raw):
        raw["stages"][1]["outputs"][0]["name"] = "scores"
        raw["default_output"] = "scores"
        raw["tensor_names"]["outputs"] = {"scores": raw["tensor_names"]["outputs"].pop("probabilities")}

    with pytest.raises(InvalidServiceDefinition, match="produces \\['probabilities'\\].*outputs \\['scores'\\]"):
        ServiceExecutor(_rewrite_service(service_dir, tmp_path / "renamed", rename_output), "arria10")


def test_first_stage_must_take_one_input(service_dir, tmp_path):
    def two_inputs(raw):
        raw["stages"][0]["inputs"].append({"name": "extra", "shape": [-1], "dtype": "float32"})

    with pytest.raises(InvalidServiceDefinition, match="must take one input"):
        ServiceExecutor(_rewrite_service(service_dir, tmp_path / "two-inputs", two_inputs), "arria10")


def test_unsupported_numeric_format_of_the_device_is_refused_at_load(service_dir, tmp_path):
    def exotic_format(raw):
        raw["stages"][0]["numeric_format"] = "fp64"

    with pytest.raises(InvalidInput, match="does not support numeric format 'fp64'"):
        ServiceExecutor(_rewrite_service(service_dir, tmp_path / "fp64", exotic_format), "arria10")


def test_a_cpu_only_service_needs_no_device(service_dir, tmp_path):
    def on_cpu(raw):
        raw["stages"][0]["target"] = "CPU"

    directory = _rewrite_service(service_dir, tmp_path / "cpu", on_cpu)
    assert load_service(directory).stages[0].target == "CPU"
    executor = ServiceExecutor(directory)
    try:
        assert executor.device is None
        images = encoded_images(2)
        np.testing.assert_allclose(
            executor.predict_encoded(images)["probabilities"], reference_probabilities(service_dir, images), rtol=1e-6
        )
    finally:
        executor.close()
