"""Tensor names: recorded in service.json, resolved by the data plane beside the plain names."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fpgaflow.fpga_runtime.codec import STRING
from fpgaflow.fpga_runtime.dataplane import DataPlane
from fpgaflow.fpga_runtime.errors import InvalidInput, InvalidServiceDefinition
from fpgaflow.fpga_runtime.preprocessing import preprocess
from fpgaflow.fpga_runtime.protocol import CLASSES_OUTPUT, IMAGES_INPUT, PREPROCESSED_INPUT
from fpgaflow.fpga_runtime.service import SERVICE_FILE, TensorNames, load_service
from fpgaflow.tasks.packaging.tensor_names import classifier_tensor_names, detector_tensor_names
from tests.fixtures.tiny_service import (
    INPUT_TENSORS,
    OUTPUT_TENSORS,
    encoded_images,
    reference_probabilities,
    write_tiny_service,
)


@pytest.fixture(scope="module")
def service_dir(tmp_path_factory):
    return write_tiny_service(tmp_path_factory.mktemp("service") / "tiny", name="tiny", version="1")


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


def _rewrite(service_dir, tmp_path, change) -> None:
    copy = tmp_path / "service"
    copy.mkdir()
    for path in service_dir.iterdir():
        copy.joinpath(path.name).write_bytes(path.read_bytes())
    raw = json.loads((copy / SERVICE_FILE).read_text())
    change(raw)
    (copy / SERVICE_FILE).write_text(json.dumps(raw))
    return copy


def test_the_tensor_names_ask_for_the_same_tensors_as_the_plain_names(plane, service_dir):
    images = _images()
    by_tensor_name = plane.infer("tiny", "", {INPUT_TENSORS: images}, [OUTPUT_TENSORS])
    assert list(by_tensor_name) == [OUTPUT_TENSORS]
    np.testing.assert_allclose(by_tensor_name[OUTPUT_TENSORS], reference_probabilities(service_dir, list(images)), rtol=1e-6)
    mixed = plane.infer("tiny", "", {IMAGES_INPUT: images}, [OUTPUT_TENSORS, "classes:0", CLASSES_OUTPUT])
    assert list(mixed) == [OUTPUT_TENSORS, "classes:0", CLASSES_OUTPUT]
    assert mixed["classes:0"].tolist() == mixed[CLASSES_OUTPUT].tolist() == mixed[OUTPUT_TENSORS].argmax(axis=1).tolist()


def test_the_preprocessed_input_answers_to_input_0(plane, service_dir):
    spec = load_service(service_dir).preprocessing
    batch = np.stack([preprocess(data, spec) for data in encoded_images(2)])
    outputs = plane.infer("tiny", "", {f"{PREPROCESSED_INPUT}:0": batch}, [OUTPUT_TENSORS])
    np.testing.assert_allclose(outputs[OUTPUT_TENSORS], reference_probabilities(service_dir, encoded_images(2)), rtol=1e-6)


def test_metadata_maps_every_plain_name_to_its_tensor_name(plane):
    metadata = plane.metadata("tiny")
    assert metadata.input_tensor_names == {IMAGES_INPUT: INPUT_TENSORS, PREPROCESSED_INPUT: "input:0"}
    assert metadata.output_tensor_names == {
        "probabilities": OUTPUT_TENSORS,
        "classes": "classes:0",
        "class_names": "class_names:0",
    }


def test_an_unknown_output_is_refused_naming_both_names_of_every_output(plane):
    with pytest.raises(InvalidInput) as refused:
        plane.infer("tiny", "", {INPUT_TENSORS: _images(1)}, ["dense/Softmax:0"])
    message = str(refused.value)
    assert "unknown outputs ['dense/Softmax:0']" in message
    assert f"'probabilities' or '{OUTPUT_TENSORS}'" in message and "'classes' or 'classes:0'" in message


@pytest.mark.parametrize(
    "names",
    [["Placeholder"], ["images:0"], [IMAGES_INPUT, INPUT_TENSORS]],
    ids=["no index", "plain name with an index", "one input twice"],
)
def test_an_input_named_neither_way_or_given_twice_is_refused(plane, names):
    with pytest.raises(InvalidInput, match=f"give exactly one input, 'images' or '{INPUT_TENSORS}'.*'input' or 'input:0'"):
        plane.infer("tiny", "", dict.fromkeys(names, _images(1)))


def test_a_tensor_name_input_is_checked_under_the_name_it_was_given(plane):
    with pytest.raises(InvalidInput, match=f"input '{INPUT_TENSORS}' must hold encoded images"):
        plane.infer("tiny", "", {INPUT_TENSORS: np.zeros(1, np.float32)})


def test_a_service_json_without_tensor_names_answers_to_placeholder_and_output_0(service_dir, tmp_path):
    older = _rewrite(service_dir, tmp_path, lambda raw: raw.pop("tensor_names"))
    names = load_service(older).tensor_names
    assert names == TensorNames()
    assert names.of_input(IMAGES_INPUT) == "Placeholder:0" and names.of_output("probabilities") == "probabilities:0"


@pytest.mark.parametrize(
    ("tensor_names", "problem"),
    [
        ({"input": "Placeholder", "outputs": {}}, "must look like a TensorFlow tensor name"),
        ({"outputs": {"logits": "dense/BiasAdd:0"}}, "names ['logits'], which are not outputs of the last stage"),
        ({"outputs": {"probabilities": "Placeholder:0"}}, "gives ['Placeholder:0'] to more than one tensor"),
        ({"outputs": {"probabilities": "classes:0"}}, "['classes:0'] already name other inputs or outputs"),
        ({"input": "input:0", "outputs": {}}, "['input:0'] already name other inputs or outputs"),
    ],
    ids=["no index", "unknown output", "one name twice", "another output's name", "the other input's name"],
)
def test_bad_tensor_names_are_refused_naming_the_problem(service_dir, tmp_path, tensor_names, problem):
    broken = _rewrite(service_dir, tmp_path, lambda raw: raw.update(tensor_names=tensor_names))
    with pytest.raises(InvalidServiceDefinition, match="tensor_names") as refused:
        load_service(broken)
    assert problem in str(refused.value)


@pytest.mark.parametrize(
    ("featurizer", "output_tensors"),
    [
        ("resnet50", "classifier/resnet_v1_50/predictions/Softmax:0"),
        ("resnet152", "classifier/resnet_v1_152/predictions/Softmax:0"),
        ("densenet121", "classifier/densenet121/predictions/Softmax:0"),
        ("vgg16", "classifier/vgg_16/predictions/Softmax:0"),
    ],
)
def test_a_classifier_is_named_as_the_original_quick_start_printed(featurizer, output_tensors):
    names = classifier_tensor_names(featurizer)
    assert names.client_names() == {"input_tensors": "Placeholder:0", "output_tensors": output_tensors}


def test_a_detector_names_each_of_its_four_outputs_and_prints_them_as_a_list():
    names = detector_tensor_names("ssd_vgg")
    assert names.output_tensors == [
        "ssd_300_vgg/detection_boxes:0",
        "ssd_300_vgg/detection_scores:0",
        "ssd_300_vgg/detection_classes:0",
        "ssd_300_vgg/num_detections:0",
    ]
    assert list(names.outputs) == ["boxes", "scores", "classes", "num_detections"]
