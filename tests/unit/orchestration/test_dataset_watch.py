"""check_data's plain functions: fingerprints of a real folder, their persistence, change detection."""

from __future__ import annotations

import json
import os

import pytest

from fpgaflow.tasks.data.manifest import build_manifest, dataset_fingerprint
from fpgaflow.tasks.data.watch import (
    check_dataset,
    check_markdown,
    dataset_updated_payload,
    last_fingerprint,
    record_fingerprint,
    state_path,
)
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.events import DATASET_RESOURCE_PREFIX, DATASET_UPDATED, RESOURCE_ID, dataset_resource, folder_key
from tests.fixtures.tiny_service import encoded_images


@pytest.fixture
def data_dir(tmp_path):
    images = encoded_images(4)
    for label, chunk in (("cat", images[:2]), ("dog", images[2:])):
        (tmp_path / "data" / label).mkdir(parents=True)
        for index, data in enumerate(chunk):
            (tmp_path / "data" / label / f"{index}.jpg").write_bytes(data)
    return tmp_path / "data"


def test_first_check_has_no_previous_fingerprint_and_is_not_a_change(data_dir):
    check = check_dataset(data_dir)

    assert check.first_check and not check.changed
    assert check.previous_fingerprint is None
    assert check.fingerprint == dataset_fingerprint(build_manifest(data_dir))
    assert check.num_images == 4
    assert check.data_dir == str(data_dir.resolve())


def test_recorded_fingerprint_makes_the_next_check_unchanged(data_dir):
    first = check_dataset(data_dir)
    record_fingerprint(data_dir, first.fingerprint, first.num_images)

    second = check_dataset(data_dir)

    assert second.previous_fingerprint == first.fingerprint
    assert not second.changed and not second.first_check


def test_new_image_changes_the_fingerprint(data_dir):
    first = check_dataset(data_dir)
    record_fingerprint(data_dir, first.fingerprint, first.num_images)
    (data_dir / "dog" / "extra.jpg").write_bytes(encoded_images(1, seed=9)[0])

    second = check_dataset(data_dir)

    assert second.changed
    assert second.previous_fingerprint == first.fingerprint != second.fingerprint
    assert second.num_images == 5


def test_relabelled_file_changes_the_fingerprint(data_dir):
    first = check_dataset(data_dir)
    record_fingerprint(data_dir, first.fingerprint, first.num_images)
    os.replace(data_dir / "cat" / "0.jpg", data_dir / "dog" / "0-moved.jpg")

    assert check_dataset(data_dir).changed


def test_state_is_kept_per_folder_under_the_home(data_dir, tmp_path, fpgaflow_home):
    other = tmp_path / "other"
    (other / "a").mkdir(parents=True)
    record_fingerprint(data_dir, "f" * 64, 4)
    record_fingerprint(other, "e" * 64, 0)

    assert state_path(data_dir).parent == fpgaflow_home / "state" / "datasets"
    assert state_path(data_dir) != state_path(other)
    assert last_fingerprint(data_dir).fingerprint == "f" * 64
    assert last_fingerprint(other).fingerprint == "e" * 64
    stored = json.loads(state_path(data_dir).read_text())
    assert stored["data_dir"] == str(data_dir.resolve()) and stored["num_images"] == 4
    assert not [path for path in state_path(data_dir).parent.iterdir() if path.name.startswith(".")]


def test_the_same_folder_spelled_differently_shares_its_state(data_dir, monkeypatch):
    monkeypatch.chdir(data_dir.parent)
    record_fingerprint(data_dir, "a" * 64, 4)

    assert last_fingerprint(data_dir.name + "/../" + data_dir.name).fingerprint == "a" * 64
    assert folder_key(data_dir.name) == folder_key(data_dir)


def test_a_corrupt_state_file_is_named_in_the_error(data_dir):
    record_fingerprint(data_dir, "a" * 64, 4)
    state_path(data_dir).write_text("{not json")

    with pytest.raises(PipelineStepError, match=r"datasets/.*\.json.*not a valid record.*delete it"):
        check_dataset(data_dir)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(NotADirectoryError, match="does not exist"):
        check_dataset(tmp_path / "nowhere")


def test_event_resource_and_payload_carry_folder_and_fingerprint(data_dir):
    first = check_dataset(data_dir)
    record_fingerprint(data_dir, first.fingerprint, first.num_images)
    (data_dir / "cat" / "new.jpg").write_bytes(encoded_images(1, seed=5)[0])
    check = check_dataset(data_dir)

    resource = dataset_resource(data_dir)
    payload = dataset_updated_payload(check, model_name="pets")

    assert resource[RESOURCE_ID] == f"{DATASET_RESOURCE_PREFIX}{folder_key(data_dir)}"
    assert resource["fpgaflow.data_dir"] == str(data_dir.resolve())
    assert payload == {
        "data_dir": str(data_dir.resolve()),
        "fingerprint": check.fingerprint,
        "previous_fingerprint": first.fingerprint,
        "num_images": 5,
        "model_name": "pets",
    }
    assert DATASET_UPDATED in check_markdown(check, "1234") and "`1234`" in check_markdown(check, "1234")
    assert "unchanged" in check_markdown(check.model_copy(update={"previous_fingerprint": check.fingerprint}), None)
    assert "first check" in check_markdown(check.model_copy(update={"previous_fingerprint": None}), None)


def test_a_detection_folder_is_fingerprinted_by_its_images_and_annotations(tmp_path):
    from dataclasses import replace

    from fpgaflow.tasks.detection.annotations import read_annotation, write_json
    from fpgaflow.tasks.detection.sample_data import write_detection_sample_data

    data_dir = tmp_path / "boxes"
    write_detection_sample_data(data_dir, count=3, digits=(1, 7), seed=0)
    first = check_dataset(data_dir)
    record_fingerprint(data_dir, first.fingerprint, first.num_images)
    path = sorted((data_dir / "annotations").iterdir())[0]
    annotation = read_annotation(path)
    swapped = {"1": "7", "7": "1"}
    objects = (replace(annotation.objects[0], label=swapped[annotation.objects[0].label]), *annotation.objects[1:])
    write_json(path, replace(annotation, objects=objects))

    relabelled = check_dataset(data_dir)

    assert first.num_images == relabelled.num_images == 3
    assert relabelled.changed and relabelled.fingerprint != first.fingerprint
