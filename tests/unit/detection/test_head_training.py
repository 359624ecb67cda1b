"""The detector's default recipe: backbone maps computed once per image (cached), the SSD layers trained on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.settings import PipelineSettings

INPUT_SIZE = 64
WIDTH = 0.125
DIGITS = (0, 1)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[pd.DataFrame, list[str]]:
    """A few annotated sample images split 12 / 4 / 4, as the detection intake's manifest has them."""
    from fpgaflow.tasks.detection.intake import ANNOTATIONS_DIR, IMAGES_DIR
    from fpgaflow.tasks.detection.sample_data import write_detection_sample_data

    directory = tmp_path_factory.mktemp("data") / "boxes"
    write_detection_sample_data(directory, count=20, digits=DIGITS, seed=3)
    images = sorted((directory / IMAGES_DIR).iterdir())
    splits = pd.DataFrame(
        {
            "path": [str(path) for path in images],
            "annotation": [str(directory / ANNOTATIONS_DIR / f"{path.stem}.json") for path in images],
            "split": ["train"] * 12 + ["val"] * 4 + ["test"] * 4,
        }
    )
    return splits, [str(digit) for digit in DIGITS]


def _detector(seed: int = 1):
    from fpgaflow.tasks.detection.model import build_detector

    return build_detector(len(DIGITS), input_size=INPUT_SIZE, width=WIDTH, seed=seed)


def _config(splits: pd.DataFrame, **training) -> PipelineConfig:
    return PipelineConfig(
        data_dir=pd.Series(splits["path"]).iloc[0].rsplit("/", 2)[0],
        featurizer="ssd_vgg",
        input_size=INPUT_SIZE,
        weights="none",
        seed=0,
        training={"epochs": 2, "batch_size": 4, "early_stopping_patience": 0, **training},
        detection={"width": WIDTH},
    )


def test_feature_maps_are_computed_once_then_read_back_and_a_changed_image_is_recomputed(data, tmp_path):
    from PIL import Image

    from fpgaflow.tasks.detection.feature_maps import FeatureMapCache, extract_feature_maps, featurizer_model, graph_fingerprint
    from fpgaflow.tasks.featurizers.features import load_images

    splits, _ = data
    paths = []
    for index, source in enumerate(splits["path"][:3]):
        paths.append(tmp_path / f"image{index}.png")
        Image.open(source).save(paths[-1])
    detector = _detector()
    featurizer, spec = featurizer_model(detector), detector.info.preprocessing
    cache = FeatureMapCache(tmp_path / "cache", graph_fingerprint(featurizer, spec))

    first = extract_feature_maps(featurizer, paths, spec, batch_size=2, cache=cache)
    assert (first.from_cache, first.computed, len(first)) == (0, 3, 3)
    direct = featurizer(load_images(paths, spec))
    assert [values.shape for values in first.maps] == [tuple(output.shape) for output in direct]
    for cached, computed in zip(first.maps, direct):
        np.testing.assert_allclose(cached, np.asarray(computed), rtol=1e-5, atol=1e-5)

    second = extract_feature_maps(featurizer, paths, spec, batch_size=2, cache=cache)
    assert (second.from_cache, second.computed) == (3, 0)
    for again, before in zip(second.maps, first.maps):
        np.testing.assert_array_equal(again, before)

    Image.open(splits["path"][5]).save(paths[1])
    third = extract_feature_maps(featurizer, paths, spec, batch_size=2, cache=cache)
    assert (third.from_cache, third.computed) == (2, 1)
    assert not np.array_equal(third.maps[0][1], first.maps[0][1])
    np.testing.assert_array_equal(third.maps[0][0], first.maps[0][0])


def test_the_graph_hash_changes_with_the_weights_and_the_preprocessing():
    from fpgaflow.tasks.detection.feature_maps import featurizer_model, graph_fingerprint
    from fpgaflow.tasks.detection.model import preprocessing

    one, other = _detector(seed=1), _detector(seed=2)
    spec = one.info.preprocessing
    assert graph_fingerprint(featurizer_model(one), spec) == graph_fingerprint(featurizer_model(_detector(seed=1)), spec)
    assert graph_fingerprint(featurizer_model(one), spec) != graph_fingerprint(featurizer_model(other), spec)
    assert graph_fingerprint(featurizer_model(one), spec) != graph_fingerprint(
        featurizer_model(one), preprocessing(INPUT_SIZE).model_copy(update={"channel_order": "RGB"})
    )


def test_the_default_trains_the_ssd_layers_on_cached_backbone_maps_and_reports_every_epoch(data, tmp_path, capsys):
    from fpgaflow.tasks.detection.feature_maps import featurizer_model
    from fpgaflow.tasks.detection.head_training import heads_model, train_detector_heads
    from fpgaflow.tasks.featurizers.features import load_images

    splits, class_names = data
    config = _config(splits)
    assert config.training.mode == "head"
    settings = PipelineSettings(home=tmp_path / "home")
    detector = _detector()
    ssd_layers = {layer.name for layer in detector.model.layers if layer.weights and not layer.name.startswith("block")}
    before = {layer.name: [np.array(value) for value in layer.get_weights()] for layer in detector.model.layers}

    result = train_detector_heads(detector, splits, class_names, config, settings)

    changed = {
        name
        for name, weights in before.items()
        if any(not np.array_equal(old, new) for old, new in zip(weights, detector.model.get_layer(name).get_weights()))
    }
    assert changed and changed <= ssd_layers and {"fc6", "conf_0"} <= changed  # the VGG-16 backbone stays frozen
    assert result.trained.trained_blocks == [] and detector.info.fine_tuned
    assert (result.maps_computed, result.maps_from_cache) == (20, 0)
    assert [record["epoch"] for record in result.trained.history] == [0, 1]
    assert all({"loss", "val_loss", "val_map50"} <= set(record) for record in result.trained.history)
    assert 0 <= result.evaluated.map50 <= 1 and 0 <= result.untrained.map50 <= 1
    reported = capsys.readouterr().err
    assert "feature maps train" in reported
    assert "epoch 1/2: loss" in reported and "val mAP@0.5" in reported and "left (1 epochs)" in reported
    assert "epoch 2/2: loss" in reported and "elapsed" in reported

    images = load_images(list(splits["path"][:2]), detector.info.preprocessing)
    combined = np.asarray(heads_model(detector, featurizer_model(detector))(featurizer_model(detector)(images)))
    from fpgaflow.tasks.detection.geometry import flatten_heads

    loc, logits = flatten_heads(detector(images), detector.info.feature_maps, detector.info.num_classes)
    np.testing.assert_allclose(combined[..., :4], loc, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(combined[..., 4:], logits, rtol=1e-4, atol=1e-5)

    again = train_detector_heads(_detector(), splits, class_names, config, settings)
    assert (again.maps_computed, again.maps_from_cache) == (0, 20)
    assert again.untrained.map50 == pytest.approx(result.untrained.map50)


def test_full_mode_still_trains_end_to_end_from_the_images(data, tmp_path):
    from fpgaflow.tasks.detection.train_step import detection_train_step

    splits, class_names = data
    config = _config(splits, mode="full", unfreeze_blocks=1, epochs=1)
    settings = PipelineSettings(home=tmp_path / "home")
    outcome = detection_train_step(splits, class_names, "unused", config, tmp_path / "run", settings)
    assert outcome.trained_blocks == ["block5"]
    assert not (settings.home / "cache" / "detection-maps").exists()
    assert [set(record) >= {"loss", "val_loss", "val_map50"} for record in outcome.history] == [True]
    pictures = [Path(picture) for picture in outcome.evaluation.pictures]  # what the evaluation artifact links
    assert [picture.name for picture in pictures] == ["precision_recall.png", "sample_detections.png"]
    assert all(picture.read_bytes().startswith(b"\x89PNG") for picture in pictures)
