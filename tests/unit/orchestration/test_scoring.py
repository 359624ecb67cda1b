"""Accuracy counting, labelled image lists and scoring a service definition in process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.operations.scoring import (
    LabelledImage,
    accuracy_report,
    batches,
    folder_images,
    score_images,
    score_service_dir,
    split_images,
    top1_names,
)
from tests.fixtures.labelled_images import HOLDOUT_CORRECT as CORRECT
from tests.fixtures.labelled_images import HOLDOUT_IMAGES as IMAGES


def test_accuracy_overall_and_per_class():
    report = accuracy_report(["cat", "cat", "dog", "fox"], ["cat", "dog", "dog", "cat"])

    assert (report.images, report.correct, report.accuracy) == (4, 2, 0.5)
    assert report.table() == [
        {"label": "cat", "images": 2, "correct": 1, "accuracy": 0.5},
        {"label": "dog", "images": 1, "correct": 1, "accuracy": 1.0},
        {"label": "fox", "images": 1, "correct": 0, "accuracy": 0.0},
    ]


def test_accuracy_needs_one_prediction_per_label():
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        accuracy_report(["cat", "dog"], ["cat"])
    with pytest.raises(ValueError, match="no labelled images"):
        accuracy_report([], [])


def test_top1_names_and_shape_check():
    probabilities = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])

    assert top1_names(probabilities, ("cat", "dog", "fox")) == ["dog", "cat"]
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        top1_names(probabilities, ("cat", "dog"))


def test_batches_cover_every_item_once():
    assert [list(batch) for batch in batches(list(range(7)), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError, match="at least 1"):
        list(batches([1], 0))


def test_folder_images_skips_undecodable_files(holdout_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(holdout_dir, copy)
    (copy / "cat").mkdir(exist_ok=True)
    (copy / "cat" / "broken.jpg").write_bytes(b"not an image")

    images, skipped = folder_images(copy)

    assert len(images) == IMAGES
    assert skipped == ["cat/broken.jpg"]
    assert all(image.path.is_file() and image.label in ("cat", "dog", "fox") for image in images)


def test_split_images_reads_one_split(tmp_path):
    manifest = tmp_path / "splits.csv"
    pd.DataFrame(
        {"path": ["/a/1.jpg", "/a/2.jpg", "/b/3.jpg"], "label": ["7", "7", "1"], "split": ["test", "train", "test"]}
    ).to_csv(manifest, index=False)

    assert split_images(manifest) == [LabelledImage(Path("/a/1.jpg"), "7"), LabelledImage(Path("/b/3.jpg"), "1")]
    with pytest.raises(PipelineStepError, match="no 'val' images"):
        split_images(manifest, "val")


def test_score_images_in_batches_keeps_the_order(holdout_dir):
    images, _ = folder_images(holdout_dir)
    seen_batch_sizes = []

    def scorer(encoded):
        seen_batch_sizes.append(len(encoded))
        return [image.label for image in images[sum(seen_batch_sizes) - len(encoded) : sum(seen_batch_sizes)]]

    report = score_images(images, scorer, batch_size=3)

    assert report.accuracy == 1.0
    assert seen_batch_sizes == [3, 3, 2]


def test_score_images_rejects_a_scorer_that_drops_images(holdout_dir):
    images, _ = folder_images(holdout_dir)
    with pytest.raises(ValueError, match="1 predictions for 3 images"):
        score_images(images, lambda encoded: ["cat"], batch_size=3)


def test_service_definition_scores_what_its_onnx_stages_predict(tiny_service_dir, holdout_dir):
    images, _ = folder_images(holdout_dir)

    report = score_service_dir(tiny_service_dir, images, batch_size=4)

    assert (report.images, report.correct) == (IMAGES, CORRECT)
    assert report.accuracy == CORRECT / IMAGES
