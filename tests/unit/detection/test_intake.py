"""Detection intake: the sample set passes, and every rule names the offending file on a broken copy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from fpgaflow.tasks.detection.intake import intake_detection_dataset, load_detection_splits
from fpgaflow.tasks.errors import DataValidationError
from fpgaflow.tasks.settings import PipelineSettings

VOC = """<annotation><size><width>{width}</width><height>{height}</height></size>
<object><name>7</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>20</xmax><ymax>30</ymax></bndbox></object></annotation>"""


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    from fpgaflow.tasks.detection.sample_data import write_detection_sample_data

    directory = tmp_path_factory.mktemp("detection") / "digits"
    write_detection_sample_data(directory, count=12, digits=[1, 7], seed=3)
    return directory


@pytest.fixture
def dataset(sample_dir, tmp_path) -> Path:
    return Path(shutil.copytree(sample_dir, tmp_path / "data"))


def annotation(dataset: Path, stem: str) -> dict:
    return json.loads((dataset / "annotations" / f"{stem}.json").read_text())


def rewrite(dataset: Path, stem: str, change) -> None:
    path = dataset / "annotations" / f"{stem}.json"
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


def broken(data_dir: Path, settings: PipelineSettings | None = None) -> set[str]:
    with pytest.raises(DataValidationError) as caught:
        intake_detection_dataset(data_dir, settings or PipelineSettings())
    return {line.strip()[2:].split(" (")[0] for line in str(caught.value).splitlines()[1:]}


def test_sample_set_passes_with_counts_and_a_split(dataset):
    result = intake_detection_dataset(dataset, PipelineSettings())
    assert result.validation_success and result.class_names == ["1", "7"]
    objects = sum(len(annotation(dataset, f"{index:05d}")["objects"]) for index in range(12))
    assert (result.num_images, result.num_objects, result.num_classes) == (12, objects, 2)
    splits = load_detection_splits(result.split_path)
    assert sorted(splits["split"].value_counts().to_dict().items()) == [("test", 2), ("train", 8), ("val", 2)]
    assert result.split_counts == {"train": 8, "val": 2, "test": 2}
    assert all(Path(path).is_file() for path in splits["annotation"])
    assert result.summary()["num_objects"] == objects


def test_every_broken_rule_names_its_file(dataset):
    images, annotations = dataset / "images", dataset / "annotations"
    first = annotation(dataset, "00000")
    rewrite(dataset, "00000", lambda raw: raw["objects"][0].update(box=[-3, 2, 10, 12]))
    rewrite(dataset, "00001", lambda raw: raw["objects"][0].update(box=[5, 9, 5, 20]))
    rewrite(dataset, "00002", lambda raw: raw["objects"][0].update(label="9"))
    rewrite(dataset, "00003", lambda raw: raw.update(width=raw["width"] + 1))
    (annotations / "00004.json").write_text("{not json")
    (annotations / "00005.json").unlink()
    (images / "00006.jpg").write_bytes((images / "00006.jpg").read_bytes()[:300])
    (annotations / "00007.xml").write_text(VOC.format(width=first["width"], height=first["height"]))
    assert broken(dataset) == {
        "annotations/00000.json#0: box_inside_image",
        "annotations/00001.json#0: box_has_area",
        "annotations/00002.json#0: known_label",
        "images/00003.jpg: annotation_size_matches_image",
        "images/00004.jpg: annotation_readable",
        "images/00005.jpg: has_annotation",
        "images/00006.jpg: decodes_as_image",
        "images/00007.jpg: has_annotation",
    }


def test_messages_explain_the_problem(dataset):
    rewrite(dataset, "00000", lambda raw: raw["objects"][0].update(box=[-3, 2, 10, 12]))
    (dataset / "annotations" / "00004.json").write_text("{not json")
    with pytest.raises(DataValidationError) as caught:
        intake_detection_dataset(dataset, PipelineSettings())
    message = str(caught.value)
    assert f"box [-3, 2, 10, 12] (xmin, ymin, xmax, ymax) in a {annotation(dataset, '00000')['width']}x" in message
    assert "images/00004.jpg: annotation_readable (00004.json: not valid JSON" in message


def test_pascal_voc_annotations_are_accepted(dataset):
    size = annotation(dataset, "00000")
    (dataset / "annotations" / "00000.json").unlink()
    (dataset / "annotations" / "00000.xml").write_text(VOC.format(width=size["width"], height=size["height"]))
    result = intake_detection_dataset(dataset, PipelineSettings())
    splits = load_detection_splits(result.split_path)
    assert splits.loc[splits["relpath"] == "images/00000.jpg", "annotation"].item().endswith("00000.xml")


def test_labels_without_objects_and_too_few_images(dataset):
    (dataset / "labels.txt").write_text("1\n7\n4\n")
    assert broken(dataset, PipelineSettings(detection_min_images=20)) == {"(dataset): min_images", "4: min_objects_per_label"}


@pytest.mark.parametrize(
    "labels, problem",
    [
        (None, "labels.txt is missing"),
        ("\n\n", "lists no labels"),
        ("1\n7\n1\n", "lists ['1'] more than once"),
        ("1\nbackground\n", "reserved label 'background'"),
    ],
)
def test_unusable_labels_file(dataset, labels, problem):
    path = dataset / "labels.txt"
    path.unlink() if labels is None else path.write_text(labels)
    with pytest.raises(DataValidationError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        intake_detection_dataset(dataset, PipelineSettings())


def test_missing_folder_says_what_layout_is_expected(dataset):
    shutil.rmtree(dataset / "annotations")
    with pytest.raises(DataValidationError, match="annotations/ is missing"):
        intake_detection_dataset(dataset, PipelineSettings())


def test_skip_policy_leaves_undecodable_images_out(dataset):
    (dataset / "images" / "00006.jpg").write_bytes(b"\xff\xd8 not really")
    result = intake_detection_dataset(dataset, PipelineSettings(unreadable_policy="skip"))
    assert result.num_images == 11 and [item.file for item in result.skipped] == ["images/00006.jpg"]
    assert "images/00006.jpg" not in set(pd.read_csv(result.split_path)["relpath"])
