"""Every intake rule, each on a deliberately broken copy of a small real dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from fpgaflow.tasks.data.intake import intake_dataset
from fpgaflow.tasks.errors import DataValidationError
from fpgaflow.tasks.settings import PipelineSettings


@pytest.fixture
def dataset(digits_dir, tmp_path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(digits_dir, copy)
    return copy


def broken_rules(data_dir: Path, settings: PipelineSettings | None = None) -> set[tuple[str, str]]:
    with pytest.raises(DataValidationError) as caught:
        intake_dataset(data_dir, settings or PipelineSettings())
    report = json.loads(Path(caught.value.report_path).read_text())
    assert report["success"] is False
    return {line.strip()[2:].split(" (")[0] for line in str(caught.value).splitlines()[1:]}


def test_valid_dataset_passes_and_reports_counts(dataset):
    result = intake_dataset(dataset, PipelineSettings())
    assert result.validation_success
    assert (result.num_images, result.num_classes) == (300, 10)
    assert sum(result.split_counts.values()) == 300
    assert json.loads(Path(result.report_path).read_text())["success"] is True


def test_corrupt_jpeg_is_named(dataset):
    victim = dataset / "3" / sorted(p.name for p in (dataset / "3").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:200])
    assert broken_rules(dataset) == {f"3/{victim.name}: decodes_as_image"}


def test_empty_file_is_named(dataset):
    (dataset / "5" / "empty.jpg").write_bytes(b"")
    assert broken_rules(dataset) == {"5/empty.jpg: file_not_empty"}


def test_tiny_image_breaks_both_size_rules(dataset):
    Image.new("RGB", (4, 40), "white").save(dataset / "7" / "narrow.png")
    Image.new("RGB", (40, 4), "white").save(dataset / "7" / "flat.png")
    assert broken_rules(dataset) == {"7/narrow.png: min_width", "7/flat.png: min_height"}


def test_format_outside_the_allowed_list(dataset):
    Image.new("RGB", (32, 32), "white").save(dataset / "1" / "frame.gif")
    assert broken_rules(dataset) == {"1/frame.gif: allowed_format"}


def test_one_class_folder(dataset):
    for folder in dataset.iterdir():
        if folder.name != "0":
            shutil.rmtree(folder)
    assert broken_rules(dataset) == {"(dataset): min_classes"}


def test_duplicate_content_under_two_labels_names_both_files(dataset):
    source = sorted((dataset / "2").iterdir())[0]
    shutil.copy(source, dataset / "8" / "copied.jpg")
    assert broken_rules(dataset) == {f"2/{source.name}: no_duplicate_across_labels", "8/copied.jpg: no_duplicate_across_labels"}


def test_duplicate_within_one_label_is_allowed(dataset):
    source = sorted((dataset / "2").iterdir())[0]
    shutil.copy(source, dataset / "2" / "again.jpg")
    assert intake_dataset(dataset, PipelineSettings()).validation_success


def test_too_few_images_per_class_and_imbalance(dataset):
    for extra in sorted((dataset / "4").iterdir())[5:]:
        extra.unlink()
    rules = broken_rules(dataset, PipelineSettings(min_images_per_class=10, max_class_imbalance=3))
    assert rules == {"4: min_images_per_class", "4: max_class_imbalance"}


def test_skip_policy_excludes_unreadable_files_loudly(dataset, caplog):
    (dataset / "6" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (dataset / "6" / "empty.png").write_bytes(b"")
    result = intake_dataset(dataset, PipelineSettings(unreadable_policy="skip"))
    assert result.num_images == 300
    assert {item.file for item in result.skipped} == {"6/broken.jpg", "6/empty.png"}
    assert "skipping unreadable file 6/broken.jpg" in caplog.text


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(NotADirectoryError, match="does not exist"):
        intake_dataset(tmp_path / "nowhere", PipelineSettings())
