"""`fpgaflow sample-data --detection` and `fpgaflow validate --detection`, run in-process."""

from __future__ import annotations

import json

from fpgaflow.flows.cli import main
from fpgaflow.tasks.detection.annotations import read_annotation


def test_sample_data_writes_annotated_canvases_of_the_chosen_digits(tmp_path, capsys):
    target = tmp_path / "boxes"
    assert main(["sample-data", str(target), "--detection", "--count", "6", "--digits", "38"]) == 0
    assert "wrote 6 images with" in capsys.readouterr().out
    assert (target / "labels.txt").read_text() == "3\n8\n"
    images = sorted((target / "images").iterdir())
    assert [path.suffix for path in images] == [".jpg"] * 6
    for path in images:
        annotation = read_annotation(target / "annotations" / f"{path.stem}.json")
        assert 96 <= annotation.width <= 160 and 96 <= annotation.height <= 160 and 1 <= len(annotation.objects) <= 3
        for item in annotation.objects:
            xmin, ymin, xmax, ymax = item.box
            assert item.label in ("3", "8") and 0 <= xmin < xmax <= annotation.width and 0 <= ymin < ymax <= annotation.height
            assert xmax - xmin <= 48 and ymax - ymin <= 48


def test_the_same_seed_writes_the_same_files(tmp_path):
    from fpgaflow.tasks.detection.sample_data import write_detection_sample_data

    first = write_detection_sample_data(tmp_path / "a", count=3, digits=[5], seed=9)
    second = write_detection_sample_data(tmp_path / "b", count=3, digits=[5], seed=9)
    assert first == second
    for name in ("images/00002.jpg", "annotations/00002.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_bad_sample_arguments_are_usage_errors(tmp_path, capsys):
    assert main(["sample-data", str(tmp_path / "x"), "--detection", "--digits", "1a"]) == 2
    assert "--digits a selection of 0-9" in capsys.readouterr().err


def test_validate_detection(tmp_path, capsys):
    target = tmp_path / "boxes"
    assert main(["sample-data", str(target), "--detection", "--count", "10", "--digits", "17"]) == 0
    capsys.readouterr()
    assert main(["validate", str(target), "--detection", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_images"] == 10 and summary["num_classes"] == 2 and summary["validation_success"]
    (target / "annotations" / "00001.json").unlink()
    assert main(["validate", str(target), "--detection"]) == 1
    assert "images/00001.jpg: has_annotation (no annotations/00001.json or annotations/00001.xml)" in capsys.readouterr().out
