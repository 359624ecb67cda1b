"""Acceptance: on the sample digits the train step learns, repeats exactly with the same seed, reuses its
feature cache, and exports two stages that reproduce its predictions from the same preprocessing."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fpgaflow.fpga_runtime.preprocessing import preprocess
from fpgaflow.tasks.config import PipelineConfig, TrainingConfig
from fpgaflow.tasks.featurizers.features import load_images
from fpgaflow.tasks.settings import PipelineSettings
from fpgaflow.tasks.training.batches import ImageBatches
from fpgaflow.tasks.training.export import ExportedModel, load_model
from fpgaflow.tasks.training.train_step import TrainingOutcome, train_step

# Random-init ResNet-50 features at 64x64 with a linear head: 0.825 test accuracy measured on these
# 300 images (40 test images, chance 0.10); the full 1,797 digits reach about 0.97.
MIN_TEST_ACCURACY = 0.6


def run_train_step(digits, digits_dir: Path, home: Path, output_dir: Path) -> TrainingOutcome:
    config = PipelineConfig(
        data_dir=digits_dir, featurizer="resnet50", weights="none", input_size=64, seed=0, training=TrainingConfig(hidden_units=0)
    )
    return train_step(
        digits.splits, digits.class_names, digits.fingerprint, config, output_dir, PipelineSettings(home=home), progress=False
    )


@pytest.fixture(scope="module")
def trained(digits, digits_dir, tmp_path_factory) -> tuple[TrainingOutcome, Path]:
    home = tmp_path_factory.mktemp("home")
    return run_train_step(digits, digits_dir, home, tmp_path_factory.mktemp("run")), home


@pytest.fixture(scope="module")
def exported(trained) -> ExportedModel:
    return load_model(trained[0].model_files.directory)


def test_learns_well_above_chance(trained):
    outcome, _ = trained
    assert not outcome.features_from_cache
    assert outcome.evaluation.metrics["accuracy"] > MIN_TEST_ACCURACY
    assert outcome.evaluation.metrics["auc_ovr"] > 0.9
    summary = json.loads(json.dumps(outcome.summary()))
    assert summary["featurizer"] == {"name": "resnet50", "input_size": 64, "feature_dim": 2048}
    assert {"accuracy", "f1_macro", "auc_ovr"} <= set(summary["metrics"])
    assert all(Path(path).is_file() for path in outcome.evaluation.pictures)
    assert pickle.loads(pickle.dumps(outcome)) == outcome  # plain data: the flow persists it as a task result


def test_same_seed_gives_the_same_metrics_from_scratch_and_from_the_cache(trained, digits, digits_dir, tmp_path):
    first, home = trained
    fresh = run_train_step(digits, digits_dir, tmp_path / "other-home", tmp_path / "fresh")
    cached = run_train_step(digits, digits_dir, home, tmp_path / "cached")
    assert (fresh.features_from_cache, cached.features_from_cache) == (False, True)
    assert fresh.featurizer.fingerprint == first.featurizer.fingerprint
    for again in (fresh, cached):
        assert again.evaluation.metrics == first.evaluation.metrics
        assert again.evaluation.confusion_matrix == first.evaluation.confusion_matrix
        assert again.history == first.history


def test_exported_stages_reproduce_the_test_predictions(trained, exported, digits):
    outcome, _ = trained
    assert exported.class_names == digits.class_names and exported.featurizer == outcome.featurizer
    test = digits.splits[digits.splits["split"] == "test"]
    images = np.stack([preprocess(Path(path).read_bytes(), exported.preprocessing) for path in test["path"]])
    probabilities = exported.cpu_stage.predict(exported.fpga_stage.predict(images, verbose=0), verbose=0)
    labels = np.array([digits.class_names.index(label) for label in test["label"]])
    assert float(np.mean(probabilities.argmax(axis=1) == labels)) == outcome.evaluation.metrics["accuracy"]


def odd_images(directory: Path) -> list[Path]:
    """A rotated-by-EXIF JPEG, a PNG with alpha, a BMP, a wide greyscale JPEG."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(40, 70, 3), dtype=np.uint8)
    rotated = Image.fromarray(pixels)
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    paths = [directory / "rotated.jpg", directory / "alpha.png", directory / "plain.bmp", directory / "grey.jpg"]
    rotated.save(paths[0], exif=exif.tobytes())
    Image.fromarray(rng.integers(0, 256, size=(50, 45, 4), dtype=np.uint8), "RGBA").save(paths[1])
    Image.fromarray(pixels).save(paths[2])
    Image.fromarray(pixels[..., 0], "L").save(paths[3])
    return paths


def test_training_inputs_equal_serving_inputs_bitwise(trained, exported, digits, tmp_path):
    """What training fed the featurizer for a file is what a server computes from the file's bytes with
    the spec saved beside the model."""
    outcome, _ = trained
    saved_spec = exported.preprocessing
    paths = list(digits.splits["path"][:5]) + odd_images(tmp_path)
    featurize_time = load_images(paths, outcome.featurizer.preprocessing)
    full_mode_time, _ = ImageBatches(
        paths, np.zeros(len(paths)), outcome.featurizer.preprocessing, len(paths), shuffle=False, seed=0
    )[0]
    for index, path in enumerate(paths):
        served = preprocess(Path(path).read_bytes(), saved_spec)
        assert served.dtype == featurize_time.dtype == np.float32
        assert served.tobytes() == featurize_time[index].tobytes() == full_mode_time[index].tobytes(), path


def test_model_building_after_seeding_ignores_other_users_of_the_random_module():
    import random

    import keras

    from fpgaflow.tasks.featurizers.catalog import seed_everything

    def seeded_weights(draws_by_others: int) -> list[np.ndarray]:
        seed_everything(7)
        for _ in range(draws_by_others):  # what a Prefect API or event thread may do meanwhile
            random.random()
        inputs = keras.Input(shape=(3,))
        outputs = keras.layers.Dense(4)(keras.layers.Dropout(0.5)(keras.layers.Dense(5)(inputs)))
        return keras.Model(inputs, outputs).get_weights()

    for alone, disturbed in zip(seeded_weights(0), seeded_weights(5)):
        np.testing.assert_array_equal(alone, disturbed)
