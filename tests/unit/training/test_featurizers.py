"""Each featurizer builds at a small input size with the right feature size, facts and weights."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.featurizers.catalog import (
    FEATURES,
    INPUT,
    UnknownFeaturizer,
    WeightsUnavailable,
    build_featurizer,
    count_macs,
)
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.weights_server import closed_port_url

CAFFE = {"channel_order": "BGR", "mean": (123.68, 116.779, 103.939), "std": (1.0, 1.0, 1.0)}
TORCH = {"channel_order": "RGB", "mean": (123.675, 116.28, 103.53), "std": (58.395, 57.12, 57.375)}


@pytest.mark.parametrize(
    "name, feature_dim, preprocessing",
    [("resnet50", 2048, CAFFE), ("resnet152", 2048, CAFFE), ("densenet121", 1024, TORCH), ("vgg16", 4096, CAFFE)],
)
def test_featurizer_builds_with_its_feature_size_and_facts(name, feature_dim, preprocessing):
    featurizer = build_featurizer(name, "none", input_size=32, seed=0)
    model, info = featurizer.model, featurizer.info
    assert [tensor.name for tensor in model.inputs] == [INPUT] and model.output_names == [FEATURES]
    assert tuple(model.inputs[0].shape) == (None, 32, 32, 3) and tuple(model.outputs[0].shape) == (None, feature_dim)
    assert (info.name, info.weights, info.input_size, info.feature_dim) == (name, "none", 32, feature_dim)
    assert info.parameter_count == model.count_params() and info.mac_count == count_macs(model) > 0
    assert info.preprocessing == PreprocessSpec.for_input_size(32, **preprocessing)
    images = np.random.default_rng(0).normal(0, 50, size=(2, 32, 32, 3)).astype(np.float32)
    features = np.asarray(model(images, training=False))
    assert features.shape == (2, feature_dim) and np.isfinite(features).all()


def test_vgg16_features_are_fc7_sized_to_the_input():
    model = build_featurizer("vgg16", "none", input_size=64).model
    assert model.get_layer("fc1").kernel.shape == (2 * 2 * 512, 4096)  # 64 px -> 2x2x512 after five poolings
    assert model.get_layer("fc2").kernel.shape == (4096, 4096)


def test_mac_count_of_hand_made_layers():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8 positions * 3*3*3*4
    x = keras.layers.Conv2D(2, 1, strides=2)(x)  # 4*4 positions * 1*1*4*2
    outputs = keras.layers.Dense(5)(keras.layers.Flatten()(x))  # 32*5
    assert count_macs(keras.Model(inputs, outputs)) == 8 * 8 * 108 + 4 * 4 * 8 + 32 * 5


def test_resnet50_macs_match_the_published_figure():
    info = build_featurizer("resnet50", "none", input_size=224).info
    assert 3.8e9 < info.mac_count < 4.2e9  # ResNet-50: about 3.9 GMAC (7.7-8.2 GFLOP) per 224x224 image
    assert info.parameter_count == 23_587_712


def test_same_seed_same_weights_other_seed_other_weights():
    first, again, other = (build_featurizer("vgg16", "none", 32, seed).info.fingerprint for seed in (0, 0, 1))
    assert first == again != other


def test_weights_file_round_trip(tmp_path):
    source = build_featurizer("vgg16", "none", 32, seed=7)
    path = tmp_path / "vgg16-32.weights.h5"
    source.model.save_weights(path)
    loaded = build_featurizer("vgg16", str(path), 32, seed=0)
    assert loaded.info.weights == str(path.resolve())
    assert loaded.info.fingerprint == source.info.fingerprint


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # Keras warns before it raises on the mismatch
def test_weights_file_that_does_not_fit_is_named(tmp_path):
    path = tmp_path / "vgg16-32.weights.h5"
    build_featurizer("vgg16", "none", 32).model.save_weights(path)
    with pytest.raises(WeightsUnavailable, match=r"vgg16-32\.weights\.h5 does not fit featurizer vgg16 at input size 64"):
        build_featurizer("vgg16", str(path), 64)


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(WeightsUnavailable, match=r"missing\.weights\.h5 does not exist.*'imagenet', 'none'"):
        build_featurizer("resnet50", str(tmp_path / "missing.weights.h5"), 32)


def test_imagenet_without_the_file_says_how_to_provide_it(tmp_path):
    settings = PipelineSettings(weights_url=closed_port_url(), weights_retries=0)
    with pytest.raises(WeightsUnavailable) as caught:
        build_featurizer("densenet121", "imagenet", 32, settings=settings)
    message = str(caught.value)
    assert "cannot download densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert "FPGAFLOW_WEIGHTS_URL" in message and "fpgaflow weights import FILE" in message and "--weights none" in message


def test_vgg16_imagenet_weights_need_input_224_and_say_so_before_any_download():
    with pytest.raises(WeightsUnavailable, match="fit input size 224 only"):
        build_featurizer("vgg16", "imagenet", 64, settings=PipelineSettings(weights_url=closed_port_url()))


@pytest.mark.parametrize("name", ["ssd_vgg", "resnet18"])
def test_unknown_featurizer_lists_the_known_ones(name):
    with pytest.raises(UnknownFeaturizer, match="resnet50, resnet152, densenet121, vgg16"):
        build_featurizer(name)


def test_featurizer_call_checks_the_batch_shape():
    featurizer = build_featurizer("vgg16", "none", 32)
    with pytest.raises(ValueError, match=r"expects a batch \[N, 32, 32, 3\]"):
        featurizer(np.zeros((1, 64, 64, 3), np.float32))
    assert featurizer(np.zeros((3, 32, 32, 3), np.float32)).shape == (3, 4096)
