"""A detection service in the one data plane, and the client-side Detections (data and drawing)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fpgaflow.fpga_runtime.codec import STRING
from fpgaflow.fpga_runtime.dataplane import DataPlane
from fpgaflow.fpga_runtime.detections import Detections, detections_from_outputs, draw_detections
from fpgaflow.fpga_runtime.errors import InvalidServiceDefinition
from fpgaflow.fpga_runtime.protocol import DETECTION_OUTPUTS, IMAGES_INPUT
from fpgaflow.fpga_runtime.service import load_service
from tests.fixtures.detection_service import CLASS_NAMES, encoded_scenes, reference_detections, write_detection_service


@pytest.fixture(scope="module")
def service_dir(tmp_path_factory):
    return write_detection_service(tmp_path_factory.mktemp("service") / "detector", version="2")


@pytest.fixture()
def plane(service_dir):
    data_plane = DataPlane()
    data_plane.load(service_dir, "arria10")
    yield data_plane
    data_plane.close()


def images(count: int) -> np.ndarray:
    array = np.empty(count, dtype=STRING)
    array[:] = encoded_scenes(count)
    return array


def test_a_request_naming_no_outputs_gets_all_four_detection_outputs(plane, service_dir):
    batch = images(3)
    outputs = plane.infer("tiny-detector", "", {IMAGES_INPUT: batch})
    assert list(outputs) == list(DETECTION_OUTPUTS)
    reference = reference_detections(service_dir, list(batch))
    for name in DETECTION_OUTPUTS:
        np.testing.assert_allclose(outputs[name], reference[name], atol=1e-6)
    assert plane.infer("tiny-detector", "", {IMAGES_INPUT: batch}, ["scores"]).keys() == {"scores"}


def test_metadata_lists_the_detection_outputs(plane):
    metadata = plane.metadata("tiny-detector")
    assert metadata.task == "detection" and metadata.class_names == CLASS_NAMES
    assert [(spec.name, spec.dtype) for spec in metadata.outputs] == [
        ("boxes", "float32"),
        ("scores", "float32"),
        ("classes", "int64"),
        ("num_detections", "int64"),
    ]


def test_a_detection_service_must_output_the_four_tensors(service_dir, tmp_path):
    broken = Path(shutil.copytree(service_dir, tmp_path / "broken"))
    raw = json.loads((broken / "service.json").read_text())
    raw["stages"][1]["outputs"] = [spec for spec in raw["stages"][1]["outputs"] if spec["name"] != "num_detections"]
    (broken / "service.json").write_text(json.dumps(raw))
    with pytest.raises(
        InvalidServiceDefinition, match=r"must output \['boxes', 'scores', 'classes', 'num_detections'\]; it lacks"
    ):
        load_service(broken)


def outputs_of_two_images() -> dict[str, np.ndarray]:
    return {
        "boxes": np.array(
            [[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 0.3, 0.3], [0, 0, 0, 0]], [[0.5, 0.5, 1.0, 1.0], [0, 0, 0, 0], [0, 0, 0, 0]]],
            np.float32,
        ),
        "scores": np.array([[0.9, 0.4, 0.0], [0.7, 0.0, 0.0]], np.float32),
        "classes": np.array([[1, 0, -1], [0, -1, -1]]),
        "num_detections": np.array([2, 1]),
    }


def test_detections_drop_the_padding_and_name_the_classes():
    first, second = detections_from_outputs(outputs_of_two_images(), CLASS_NAMES)
    assert len(first) == 2 and first.labels == ["square", "circle"] and second.labels == ["circle"]
    assert len(first.above(0.5)) == 1
    np.testing.assert_allclose(first.pixel_boxes(200, 100)[0], [40, 10, 120, 50])
    assert first.to_dict(200, 100)[0] == {
        "label": "square",
        "class": 1,
        "score": pytest.approx(0.9),
        "box": [40.0, 10.0, 120.0, 50.0],
    }


def test_malformed_detection_outputs_are_refused():
    outputs = outputs_of_two_images()
    with pytest.raises(ValueError, match=r"detection outputs \['num_detections'\] are missing"):
        detections_from_outputs({key: value for key, value in outputs.items() if key != "num_detections"})
    with pytest.raises(ValueError, match="does not fit 2 images of at most 3 detections"):
        detections_from_outputs({**outputs, "num_detections": np.array([4, 1])})


def test_drawing_marks_each_box_in_its_class_colour():
    image = Image.new("RGB", (200, 100), "white")
    found = Detections(np.array([[0.2, 0.1, 0.8, 0.5]], np.float32), np.array([0.9], np.float32), np.array([1]), CLASS_NAMES)
    drawn = np.asarray(draw_detections(image, found))
    assert drawn.shape == (100, 200, 3)
    assert tuple(drawn[50, 20]) != (255, 255, 255)  # left edge of the box, x = 0.1 * 200
    assert tuple(drawn[50, 60]) == (255, 255, 255)  # inside stays untouched
    buffer = io.BytesIO()
    draw_detections(image, found).save(buffer, format="PNG")
    assert Image.open(io.BytesIO(buffer.getvalue())).size == (200, 100)
