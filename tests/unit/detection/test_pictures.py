"""The detector's pictures and the smoke test's latency histogram: PNGs that show what they were drawn from."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fpgaflow.tasks.charts import plot_latency_histogram
from fpgaflow.tasks.detection.average_precision import GroundTruth, ImageDetections, mean_average_precision
from fpgaflow.tasks.detection.pictures import SAMPLE_IMAGES, draw_sample_detections, plot_precision_recall

BOX = [0.2, 0.2, 0.6, 0.6]  # ymin, xmin, ymax, xmax, normalised


def colours(path) -> set:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 300 and image.height >= 200
        return set(image.convert("RGB").getdata())


def test_precision_recall_curves_of_the_classes_with_ground_truth(tmp_path):
    found = [ImageDetections(np.array([BOX]), np.array([0.9]), np.array([0]))]
    result = mean_average_precision(found, [GroundTruth([BOX], [0])], ["zero", "one"])
    assert list(result.curves) == ["zero"]  # "one" has no ground truth, hence no curve
    assert len(colours(plot_precision_recall(result.curves, tmp_path / "pr.png"))) > 10


def test_sample_detections_are_drawn_on_the_first_test_images(tmp_path):
    images = []
    for index in range(SAMPLE_IMAGES + 2):
        images.append(tmp_path / f"{index}.jpg")
        Image.new("RGB", (64, 64), (255, 255, 255)).save(images[-1])
    found = [ImageDetections(np.array([BOX]), np.array([0.8]), np.array([1])) for _ in images]
    drawn = colours(draw_sample_detections(images, found, ["zero", "one"], tmp_path / "samples.png"))
    assert (60, 180, 75) in drawn  # class 1's box colour
    with pytest.raises(ValueError, match="at least one image"):
        draw_sample_detections([], [], ["zero"], tmp_path / "none.png")


def test_latency_histogram_marks_its_quantiles_and_needs_latencies(tmp_path):
    assert len(colours(plot_latency_histogram([3.0, 4.5, 5.0, 12.0], "4 requests", tmp_path / "latency.png"))) > 10
    with pytest.raises(ValueError, match="at least one latency"):
        plot_latency_histogram([], "none", tmp_path / "empty.png")
