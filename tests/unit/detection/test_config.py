"""The pipeline config of a detector: SSD300's input size by default, detection settings validated."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fpgaflow.tasks.config import PipelineConfig, load_config


def test_ssd_vgg_defaults_to_300_px_and_keeps_an_explicit_size(tmp_path):
    assert PipelineConfig(data_dir=tmp_path, featurizer="ssd_vgg").input_size == 300
    assert PipelineConfig(data_dir=tmp_path, featurizer="ssd_vgg", input_size=96).input_size == 96
    assert PipelineConfig(data_dir=tmp_path).input_size == 224


def test_only_ssd_vgg_is_a_detector(tmp_path):
    assert PipelineConfig(data_dir=tmp_path, featurizer="ssd_vgg").detects
    assert not any(
        PipelineConfig(data_dir=tmp_path, featurizer=name).detects for name in ("resnet50", "resnet152", "densenet121", "vgg16")
    )


def test_ssd_vgg_trains_with_adam_unless_told_otherwise(tmp_path):
    default = PipelineConfig(data_dir=tmp_path, featurizer="ssd_vgg").training
    assert (default.optimizer, default.learning_rate) == ("adam", 1e-3)
    chosen = PipelineConfig(data_dir=tmp_path, featurizer="ssd_vgg", training={"learning_rate": 0.01}).training
    assert (chosen.optimizer, chosen.learning_rate) == ("adam", 0.01)
    assert PipelineConfig(data_dir=tmp_path, featurizer="ssd_vgg", training={"optimizer": "sgd"}).training.learning_rate == 1e-3
    assert PipelineConfig(data_dir=tmp_path).training.optimizer == "sgd"


def test_detection_settings_come_from_the_config_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("featurizer: ssd_vgg\ndetection:\n  width: 0.5\n  feature_maps: 4\n  score_threshold: 0.3\n")
    config = load_config(path, data_dir=tmp_path)
    assert (config.detection.width, config.detection.feature_maps, config.detection.score_threshold) == (0.5, 4, 0.3)
    assert config.detection.max_detections == 100 and config.input_size == 300


@pytest.mark.parametrize("detection", [{"feature_maps": 7}, {"score_threshold": 0}, {"iou_threshold": 1.5}, {"nms": 0.5}])
def test_invalid_detection_settings_are_refused(tmp_path, detection):
    with pytest.raises(ValidationError):
        PipelineConfig(data_dir=tmp_path, featurizer="ssd_vgg", detection=detection)


def test_dotted_overrides_nest_into_their_section_over_the_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("featurizer: ssd_vgg\ndetection:\n  width: 0.5\n  feature_maps: 4\n")
    config = load_config(
        path, data_dir=tmp_path, **{"detection.width": 0.25, "training.epochs": 3, "detection.iou_threshold": None}
    )
    assert (config.detection.width, config.detection.feature_maps, config.training.epochs) == (0.25, 4, 3)
    assert config.detection.iou_threshold == 0.45
