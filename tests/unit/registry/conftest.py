"""Tiny two-stage Keras models (32x32 input, 8 features, 3 classes) and the settings of a throwaway home."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fpga_runtime.preprocessing import PreprocessSpec
from fpga_runtime.settings import Settings

INPUT_SIZE = 32
FEATURE_DIM = 8
CLASS_NAMES = ("cat", "dog", "fox")


def build_stages(seed: int, features_layer: str = "features"):
    """A functional conv featurizer (FPGA stage) and a dense softmax head (CPU stage)."""
    import keras

    keras.utils.set_random_seed(seed)
    image = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="input")
    hidden = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(image)
    hidden = keras.layers.Conv2D(FEATURE_DIM, 3, activation="relu")(hidden)
    features = keras.layers.GlobalAveragePooling2D(name=features_layer)(hidden)
    fpga = keras.Model(image, features, name="fpga_stage")
    head_input = keras.Input((FEATURE_DIM,), name="features")
    probabilities = keras.layers.Dense(len(CLASS_NAMES), activation="softmax", name="probabilities")(head_input)
    cpu = keras.Model(head_input, probabilities, name="cpu_stage")
    return fpga, cpu


def save_stages(directory: Path, seed: int, features_layer: str = "features") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    fpga, cpu = build_stages(seed, features_layer)
    fpga.save(directory / "fpga_stage.keras")
    cpu.save(directory / "cpu_stage.keras")
    return directory / "fpga_stage.keras", directory / "cpu_stage.keras"


@pytest.fixture(scope="session")
def stage_files(tmp_path_factory) -> tuple[Path, Path]:
    return save_stages(tmp_path_factory.mktemp("keras-stages"), seed=1)


@pytest.fixture(scope="session")
def held_out_images() -> np.ndarray:
    """Preprocessed-looking inputs: pixel values minus the ImageNet mean."""
    rng = np.random.default_rng(7)
    return (rng.uniform(0, 255, (12, INPUT_SIZE, INPUT_SIZE, 3)) - 120).astype(np.float32)


@pytest.fixture(scope="session")
def preprocess_spec() -> PreprocessSpec:
    return PreprocessSpec.for_input_size(INPUT_SIZE)


@pytest.fixture(scope="session")
def conversion_settings(tmp_path_factory) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("conversion-home"))


@pytest.fixture(scope="session")
def converted(stage_files, held_out_images, conversion_settings, tmp_path_factory):
    """The conversion report of the tiny stages (both ONNX files beside it)."""
    from tasks.conversion import convert_stages

    fpga_path, cpu_path = stage_files
    return convert_stages(fpga_path, cpu_path, held_out_images, tmp_path_factory.mktemp("onnx"), conversion_settings)
