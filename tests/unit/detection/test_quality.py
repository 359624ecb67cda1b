"""A detector's quality measure, mAP@0.5: over gRPC on an annotated holdout folder (the monitor) it equals
the service definition run offline on a split manifest of the same images (retraining); detections
are matched to the annotations by class name; the retrain decision speaks of mAP."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fpgaflow.fpga_runtime.server import create_server
from fpgaflow.tasks.detection.annotations import AnnotatedObject, Annotation, write_json
from fpgaflow.tasks.detection.average_precision import ImageDetections
from fpgaflow.tasks.detection.quality import MEAN_AP, MeanAPReport, map50_report, score_split_by_map50
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.operations.monitoring import monitor_endpoint
from fpgaflow.tasks.operations.retraining import VersionScore, decide, decision_markdown
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.detection_service import CLASS_NAMES, encoded_scenes, reference_detections, write_detection_service

IMAGES = 4


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """The tiny detection service, and a holdout folder whose one object per image is the service's best detection."""
    service_dir = write_detection_service(tmp_path_factory.mktemp("detector"))
    holdout = tmp_path_factory.mktemp("holdout")
    (holdout / "images").mkdir()
    (holdout / "annotations").mkdir()
    (holdout / "labels.txt").write_text("".join(f"{name}\n" for name in CLASS_NAMES))
    scenes = encoded_scenes(IMAGES)
    best = reference_detections(service_dir, scenes)
    for index, data in enumerate(scenes):
        width, height = Image.open(io.BytesIO(data)).size
        ymin, xmin, ymax, xmax = best["boxes"][index, 0]
        label = CLASS_NAMES[int(best["classes"][index, 0])]
        (holdout / "images" / f"{index}.png").write_bytes(data)
        box = (float(xmin * width), float(ymin * height), float(xmax * width), float(ymax * height))
        write_json(holdout / "annotations" / f"{index}.json", Annotation(width, height, (AnnotatedObject(label, box),)))
    node, port = create_server(service_dir, "127.0.0.1:0", device_profile="arria10")
    node.start()
    node.wait_until_ready(60)
    yield service_dir, holdout, f"127.0.0.1:{port}"
    node.stop(0).wait()


def test_the_monitor_scores_a_served_detector_by_map_as_retraining_scores_it_offline(detector, tmp_path):
    service_dir, holdout, endpoint = detector
    split_path = tmp_path / "splits.csv"
    paths = sorted((holdout / "images").iterdir())
    annotations = [holdout / "annotations" / f"{path.stem}.json" for path in paths]
    pd.DataFrame({"path": paths, "annotation": annotations, "split": "test"}).to_csv(split_path, index=False)

    served = monitor_endpoint(
        endpoint, holdout, "", threshold=1.0, settings=PipelineSettings(monitor_batch_size=3), measure_of=measures
    )
    offline = score_split_by_map50(service_dir, split_path, batch_size=2)

    assert served.metric == "mAP@0.5" and served.report.images == IMAGES
    assert served.report == offline
    assert 0 < served.score <= 1 and served.skipped == ()
    assert served.degraded == (served.score < 1.0)
    assert sum(row.ground_truth for row in served.report.per_class) == IMAGES


def measures(task: str):
    assert task == "detection"
    return MEAN_AP


def test_the_detector_threshold_defaults_to_its_own_setting(detector):
    _, holdout, endpoint = detector
    result = monitor_endpoint(endpoint, holdout, "", settings=PipelineSettings(monitor_min_map50=0.0), measure_of=measures)

    assert result.threshold == 0.0 and not result.degraded


def test_a_holdout_that_is_not_a_detection_dataset_is_named(detector, tmp_path):
    _, _, endpoint = detector
    (tmp_path / "cat").mkdir()

    with pytest.raises(PipelineStepError, match="is not a detection dataset: images/ is missing"):
        monitor_endpoint(endpoint, tmp_path, "", measure_of=measures)


def test_detections_are_matched_to_the_annotations_by_class_name(detector):
    _, holdout, _ = detector
    rows = pd.DataFrame({"annotation": sorted(str(path) for path in (holdout / "annotations").iterdir())})
    boxes = np.asarray([[0.1, 0.1, 0.6, 0.6]], np.float32)
    found = [ImageDetections(boxes, np.asarray([0.9], np.float32), np.asarray([0])) for _ in range(IMAGES)]

    in_order = map50_report(found, CLASS_NAMES, rows)
    reversed_names = map50_report(
        [ImageDetections(image.boxes, image.scores, 1 - image.classes) for image in found], CLASS_NAMES[::-1], rows
    )
    with_unknown = map50_report(found, ("unknown", *CLASS_NAMES[1:]), rows)

    assert in_order == reversed_names
    assert {row.label for row in in_order.per_class} <= set(CLASS_NAMES)
    assert all(row.detections == 0 for row in with_unknown.per_class if row.label == CLASS_NAMES[0])
    with pytest.raises(PipelineStepError, match="name no objects"):
        map50_report([], CLASS_NAMES, rows.iloc[:0])


def test_the_retrain_decision_compares_map_and_says_so():
    def scored(version: str, map50: float) -> VersionScore:
        return VersionScore(name="boxes", version=version, report=MeanAPReport(images=5, map50=map50, per_class=()))

    decision = decide(scored("2", 0.42), scored("1", 0.40), candidate_gates_passed=True, min_improvement=0.0)

    assert decision.promote and decision.improvement == pytest.approx(0.02)
    assert "scores mAP@0.5 0.4200, champion version 1 0.4000" in decision.reason
    assert "Measured: mAP@0.5." in decision_markdown(decision)
    assert not decide(scored("2", 0.40), scored("1", 0.40), True, 0.0).promote
