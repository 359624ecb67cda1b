"""The SSD-VGG Keras model (full-size shapes, small builds, weights), the SSD loss, and what training freezes."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from fpgaflow.tasks.config import DetectionConfig
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.featurizers.catalog import WeightsUnavailable
from tests.fixtures.weights_server import closed_port_url, keras_weights_file, weights_server, write_manifest


def test_full_size_ssd300_has_the_twelve_head_tensors_of_the_original():
    from fpgaflow.tasks.detection.model import build_ssd_model

    model = build_ssd_model(300, 20)
    shapes = {name: tuple(tensor.shape[1:]) for name, tensor in zip(model.output_names, model.outputs)}
    assert list(shapes) == [f"loc_{k}" for k in range(6)] + [f"conf_{k}" for k in range(6)]
    sizes, boxes = (38, 19, 10, 5, 3, 1), (4, 6, 6, 6, 4, 4)
    for k, (size, count) in enumerate(zip(sizes, boxes)):
        assert shapes[f"loc_{k}"] == (size, size, count * 4)
        assert shapes[f"conf_{k}"] == (size, size, count * 21)
    assert model.get_layer("fc6").dilation_rate == (6, 6)
    assert tuple(model.get_layer("block4_conv3").output.shape[1:3]) == (38, 38)


@pytest.fixture(scope="module")
def small():
    from fpgaflow.tasks.detection.model import build_detector

    return build_detector(2, input_size=96, width=0.125, seed=1)


def test_a_small_detector_and_its_facts(small):
    info = small.info
    assert (info.name, info.input_size, info.feature_maps, info.map_sizes) == ("ssd_vgg", 96, 4, (12, 6, 3, 2))
    assert info.prior_count == 12 * 12 * 4 + 36 * 6 + 9 * 6 + 4 * 6 == len(small.layout.priors())
    assert info.preprocessing.resize == "stretch" and info.preprocessing.crop == 96
    assert info.preprocessing.channel_order == "BGR"
    heads = small(np.zeros((2, 96, 96, 3), np.float32))
    assert list(heads) == list(info.head_outputs) and heads["conf_3"].shape == (2, 2, 2, 6 * 3)


def test_seeded_builds_are_identical_and_a_weights_file_restores_them(small, tmp_path):
    from fpgaflow.tasks.detection.model import build_detector

    assert build_detector(2, input_size=96, width=0.125, seed=1).info.fingerprint == small.info.fingerprint
    assert build_detector(2, input_size=96, width=0.125, seed=2).info.fingerprint != small.info.fingerprint
    path = tmp_path / "detector.weights.h5"
    small.model.save_weights(path)
    restored = build_detector(2, weights=str(path), input_size=96, width=0.125, seed=5)
    assert restored.info.fingerprint == small.info.fingerprint and restored.info.weights == str(path)
    with pytest.raises(WeightsUnavailable, match="does not fit this detector"):
        build_detector(3, weights=str(path), input_size=96, width=0.125)


def test_missing_imagenet_weights_name_the_vgg16_notop_file_and_the_ways_out():
    from fpgaflow.tasks.detection.model import build_detector
    from fpgaflow.tasks.settings import PipelineSettings

    settings = PipelineSettings(weights_url=closed_port_url(), weights_retries=0)
    with pytest.raises(WeightsUnavailable, match="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5.*--weights none"):
        build_detector(2, weights="imagenet", input_size=96, settings=settings)
    with pytest.raises(WeightsUnavailable, match="width 1.0 only"):
        build_detector(2, weights="imagenet", input_size=96, width=0.5, settings=settings)


def test_the_backbone_takes_the_imagenet_vgg16_notop_file(tmp_path):
    """The detector obtains keras.applications' VGG-16 notop file through the same cache as the featurizers."""
    from fpgaflow.tasks.detection.model import build_detector
    from fpgaflow.tasks.featurizers.weights_store import cache_dir
    from fpgaflow.tasks.settings import PipelineSettings

    published = keras_weights_file(tmp_path, "VGG16", include_top=False)
    manifest = write_manifest(tmp_path / "manifest.json", {"vgg16_notop": published}, closed_port_url())
    with weights_server({published.name: published}) as server:
        settings = PipelineSettings(weights_manifest=manifest, weights_url=server.url)
        detector = build_detector(2, weights="imagenet", input_size=96, feature_maps=4, width=1.0, settings=settings)
    assert detector.info.weights == "imagenet" and (cache_dir(settings) / published.name).is_file()
    reference = keras.applications.VGG16(include_top=False, weights=str(published))
    for name in ("block1_conv1", "block5_conv3"):
        np.testing.assert_array_equal(detector.model.get_layer(name).kernel.numpy(), reference.get_layer(name).kernel.numpy())


def test_ssd_loss_mines_three_negatives_per_positive():
    import tensorflow as tf

    from fpgaflow.tasks.detection.loss import SsdLoss

    # One image, six priors, background + one class. Prior 0 is positive; the others are negatives
    # whose background losses are -log softmax(logits)[0].
    logits = np.array([[0.0, 2.0], [0.0, 3.0], [0.0, 1.0], [0.0, 0.5], [0.0, -1.0], [0.0, 4.0]], np.float32)
    offsets = np.zeros((6, 4), np.float32)
    offsets[0] = [0.5, 2.0, 0.0, 0.0]  # smooth L1: 0.125 + 1.5
    y_pred = np.concatenate([offsets, logits], axis=1)[None]
    y_true = np.zeros((1, 6, 5), np.float32)
    y_true[0, 0, 4] = 1
    cross_entropy = -np.log(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
    hardest = sorted(cross_entropy[1:, 0], reverse=True)[:3]  # priors 5, 1, 2
    expected = cross_entropy[0, 1] + sum(hardest) + 1.625
    loss = SsdLoss(negative_ratio=3.0)(tf.constant(y_true), tf.constant(y_pred))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(SsdLoss(negative_ratio=0.0, loc_weight=0.0)(tf.constant(y_true), tf.constant(y_pred))) == pytest.approx(
        cross_entropy[0, 1], rel=1e-5
    )


def test_head_mode_freezes_the_vgg_convolutions_full_mode_thaws_the_last_blocks(small):
    from fpgaflow.tasks.detection.model import backbone_layers
    from fpgaflow.tasks.detection.training import set_trainable

    assert set_trainable(small.model, "head", 1) == []
    assert not any(layer.trainable for layer in backbone_layers(small.model))
    assert small.model.get_layer("fc7").trainable and small.model.get_layer("conf_0").trainable
    assert set_trainable(small.model, "full", 2) == ["block4", "block5"]
    trainable = {layer.name for layer in backbone_layers(small.model) if layer.trainable}
    assert trainable == {"block4_conv1", "block4_conv2", "block4_conv3", "block5_conv1", "block5_conv2", "block5_conv3"}


def test_training_targets_put_every_object_on_a_prior(small):
    from fpgaflow.tasks.detection.average_precision import GroundTruth
    from fpgaflow.tasks.detection.training import encode_targets

    truths = [GroundTruth([[0.1, 0.1, 0.4, 0.3], [0.5, 0.5, 0.9, 0.95]], [0, 1]), GroundTruth(np.zeros((0, 4)), [])]
    targets = encode_targets(truths, small.layout.priors(), 0.5)
    assert targets.shape == (2, small.info.prior_count, 5)
    assert set(np.unique(targets[0, :, 4])) == {0.0, 1.0, 2.0} and not targets[1].any()


def test_export_writes_both_stages_and_loads_back(small, tmp_path):
    from fpgaflow.tasks.detection.export import export_detector, load_detector

    files = export_detector(small, ["1", "7"], DetectionConfig(max_detections=20), tmp_path / "model")
    assert all(
        path.is_file()
        for path in (files.fpga_stage, files.cpu_stage, files.class_names, files.featurizer, files.detection_config)
    )
    loaded = load_detector(files.directory)
    assert loaded.class_names == ["1", "7"] and loaded.detection.max_detections == 20
    assert loaded.detector.info == small.info
    images = np.random.default_rng(0).normal(0, 50, (2, 96, 96, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.detector(images)["loc_0"], small(images)["loc_0"], atol=1e-5)
    with pytest.raises(PipelineStepError, match="scores 2 classes but 3 class names"):
        export_detector(small, ["1", "7", "9"], DetectionConfig(), tmp_path / "other")
