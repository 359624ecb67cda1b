import grpc
import numpy as np
import pytest

from fpgaflow.fpga_runtime.codec import STRING
from fpgaflow.fpga_runtime.dataplane import DataPlane, ModelState
from fpgaflow.fpga_runtime.errors import FpgaflowError, InvalidInput, ModelNotFound, ModelNotReady, status_for
from fpgaflow.fpga_runtime.executor import ServiceExecutor
from fpgaflow.fpga_runtime.protocol import CLASS_NAMES_OUTPUT, CLASSES_OUTPUT, IMAGES_INPUT, PREPROCESSED_INPUT
from fpgaflow.fpga_runtime.service import load_service
from tests.fixtures.tiny_service import CLASS_NAMES, encoded_images, reference_probabilities, write_tiny_service


@pytest.fixture(scope="module")
def service_dir(tmp_path_factory):
    return write_tiny_service(tmp_path_factory.mktemp("service") / "tiny", name="tiny", version="3")


@pytest.fixture()
def plane(service_dir):
    data_plane = DataPlane()
    data_plane.load(service_dir, "arria10")
    yield data_plane
    data_plane.close()


def _images(count=2):
    array = np.empty(count, dtype=STRING)
    array[:] = encoded_images(count)
    return array


def test_infer_returns_the_default_output_unless_outputs_are_named(plane, service_dir):
    images = _images()
    outputs = plane.infer("tiny", "", {IMAGES_INPUT: images})
    assert list(outputs) == ["probabilities"]
    np.testing.assert_allclose(outputs["probabilities"], reference_probabilities(service_dir, list(images)), rtol=1e-6)


def test_classes_and_class_names_are_the_top_1_of_the_default_output(plane):
    outputs = plane.infer("tiny", "3", {IMAGES_INPUT: _images(3)}, ["probabilities", CLASSES_OUTPUT, CLASS_NAMES_OUTPUT])
    top = outputs["probabilities"].argmax(axis=1)
    assert outputs[CLASSES_OUTPUT].dtype == np.int64 and outputs[CLASSES_OUTPUT].tolist() == top.tolist()
    assert outputs[CLASS_NAMES_OUTPUT].tolist() == [CLASS_NAMES[index].encode() for index in top]


def test_empty_name_means_the_only_model(plane):
    assert plane.resolve("").service.name == "tiny"
    assert plane.metadata("").version == "3"


def test_metadata_lists_both_inputs_and_all_outputs(plane):
    metadata = plane.metadata("tiny")
    assert [(spec.name, spec.dtype, spec.shape) for spec in metadata.inputs] == [
        (IMAGES_INPUT, "string", (-1,)),
        (PREPROCESSED_INPUT, "float32", (-1, 32, 32, 3)),
    ]
    assert [spec.name for spec in metadata.outputs] == ["probabilities", CLASSES_OUTPUT, CLASS_NAMES_OUTPUT]
    assert metadata.class_names == CLASS_NAMES and metadata.versions == ("3",)


@pytest.mark.parametrize(
    ("name", "version", "problem"),
    [
        ("other", "", "model 'other' is not served here; models: ['tiny']"),
        ("tiny", "4", "model 'tiny' has no version '4'; versions: ['3']"),
    ],
)
def test_unknown_model_or_version_is_not_found(plane, name, version, problem):
    with pytest.raises(ModelNotFound) as raised:
        plane.infer(name, version, {IMAGES_INPUT: _images(1)})
    assert str(raised.value) == problem
    assert status_for(raised.value)[0] is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("inputs", "problem"),
    [
        ({}, "give exactly one input"),
        ({IMAGES_INPUT: _images(1), PREPROCESSED_INPUT: np.zeros((1, 32, 32, 3), np.float32)}, "give exactly one input"),
        ({"pixels": np.zeros((1, 32, 32, 3), np.float32)}, "got ['pixels']"),
        ({IMAGES_INPUT: np.zeros(2, np.float32)}, "must hold encoded images as strings"),
        ({IMAGES_INPUT: _images(2).reshape(1, 2)}, "must be a 1-D batch of encoded images [N], got shape [1, 2]"),
        ({PREPROCESSED_INPUT: np.zeros((1, 32, 32, 3), np.float64)}, "must be float32"),
    ],
)
def test_bad_inputs_are_invalid_input(plane, inputs, problem):
    with pytest.raises(InvalidInput) as raised:
        plane.infer("tiny", "", inputs)
    assert problem in str(raised.value)


def test_unknown_output_names_the_available_ones(plane):
    with pytest.raises(InvalidInput, match=r"unknown outputs \['logits'\].*\['probabilities', 'classes', 'class_names'\]"):
        plane.infer("tiny", "", {IMAGES_INPUT: _images(1)}, ["logits"])


def test_a_registered_model_is_unavailable_until_attached(service_dir):
    plane = DataPlane()
    changes = []
    plane.subscribe(lambda: changes.append(plane.ready()))
    plane.register(load_service(service_dir))
    try:
        assert not plane.ready() and not plane.model_ready("tiny")
        assert plane.metadata("tiny").name == "tiny"
        with pytest.raises(ModelNotReady, match="still loading") as raised:
            plane.infer("tiny", "", {IMAGES_INPUT: _images(1)})
        assert status_for(raised.value)[0] is grpc.StatusCode.UNAVAILABLE
        plane.attach(ServiceExecutor(service_dir, "arria10"))
        assert plane.ready() and plane.model_ready("tiny", "3")
        assert plane.infer("tiny", "", {IMAGES_INPUT: _images(1)})["probabilities"].shape == (1, 3)
        assert changes == [False, False, True]
    finally:
        plane.close()
    assert changes[-1] is False


def test_a_model_that_failed_to_load_answers_internal_with_the_reason(service_dir):
    plane = DataPlane()
    with pytest.raises(ModelNotFound):
        plane.resolve("tiny")
    service = load_service(service_dir)
    plane.register(service)
    plane.mark_failed(service, ValueError("weights do not fit"))
    assert plane.resolve("tiny").state is ModelState.FAILED and not plane.ready()
    with pytest.raises(FpgaflowError, match="failed to load: weights do not fit") as raised:
        plane.infer("tiny", "", {IMAGES_INPUT: _images(1)})
    assert status_for(raised.value)[0] is grpc.StatusCode.INTERNAL


def test_load_failure_is_recorded_and_raised(service_dir):
    plane = DataPlane()
    with pytest.raises(InvalidInput, match="unknown device profile 'no-such-part'"):
        plane.load(service_dir, "no-such-part")
    assert plane.resolve("tiny").state is ModelState.FAILED


def test_newest_version_is_the_default_and_names_are_required_with_several_models(service_dir, tmp_path):
    plane = DataPlane()
    try:
        plane.load(service_dir, "arria10")
        plane.load(write_tiny_service(tmp_path / "v10", name="tiny", version="10", seed=5), "arria10")
        assert plane.resolve("tiny").service.version == "10"
        assert plane.metadata("tiny", "3").versions == ("3", "10")
        plane.load(write_tiny_service(tmp_path / "other", name="other"), "arria10")
        with pytest.raises(ModelNotFound, match=r"name the model: this server holds \['other', 'tiny'\]"):
            plane.resolve("")
        assert plane.model_names() == ["other", "tiny"]
        assert {(model, version) for model, version, _ in plane.device_stats()} == {("tiny", "3"), ("tiny", "10"), ("other", "1")}
    finally:
        plane.close()


def test_stage_timings_reach_the_observer_with_model_and_version(service_dir):
    seen = []
    plane = DataPlane(on_timing=lambda model, version: lambda stage, seconds: seen.append((model, version, stage)))
    try:
        plane.load(service_dir, "arria10")
        plane.infer("tiny", "", {IMAGES_INPUT: _images(1)})
    finally:
        plane.close()
    assert seen == [("tiny", "3", "preprocess"), ("tiny", "3", "fpga"), ("tiny", "3", "cpu")]
