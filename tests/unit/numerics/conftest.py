"""A tiny functional Keras featurizer converted with tf2onnx, and preprocessed-looking images for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

INPUT_SIZE = 32
FEATURE_DIM = 24
OPSET = 17


def build_featurizer(seed: int = 0):
    """Conv stem, a block whose input feeds two branches (like a ResNet projection), pooled, a dense layer."""
    import keras

    keras.utils.set_random_seed(seed)
    image = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="input")
    stem = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(image)
    branch = keras.layers.Conv2D(20, 3, padding="same", activation="relu")(stem)
    branch = keras.layers.Conv2D(32, 1)(branch)
    shortcut = keras.layers.Conv2D(32, 1)(stem)
    merged = keras.layers.ReLU()(keras.layers.Add()([branch, shortcut]))
    pooled = keras.layers.GlobalAveragePooling2D()(merged)
    features = keras.layers.Dense(FEATURE_DIM, name="features")(pooled)
    return keras.Model(image, features, name="tiny_featurizer")


@pytest.fixture(scope="session")
def featurizer_path(tmp_path_factory) -> Path:
    from fpgaflow.tasks.conversion.onnx_stages import FEATURES, FPGA_INPUT, convert_keras_stage

    path = tmp_path_factory.mktemp("numerics-featurizer") / "fpga_stage.onnx"
    return convert_keras_stage(build_featurizer(), path, FPGA_INPUT, FEATURES, OPSET)


@pytest.fixture(scope="session")
def featurizer_model(featurizer_path) -> onnx.ModelProto:
    return onnx.load(featurizer_path)


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    """Pixel values minus the ImageNet mean, smooth enough to look like photographs."""
    rng = np.random.default_rng(2)
    coarse = rng.uniform(0, 255, (40, INPUT_SIZE // 4, INPUT_SIZE // 4, 3))
    pixels = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2) + rng.normal(0, 8, (40, INPUT_SIZE, INPUT_SIZE, 3))
    return (np.clip(pixels, 0, 255) - np.array([123.68, 116.779, 103.939])).astype(np.float32)
