"""The classifier head (any features, seeded, early stopping) and 'full' end-to-end fine-tuning."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from fpgaflow.tasks.config import TrainingConfig
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.featurizers.catalog import FEATURES, build_featurizer
from fpgaflow.tasks.featurizers.features import featurize_splits
from fpgaflow.tasks.training.head import PROBABILITIES, fine_tune_full, predict_probabilities, train_head, unfreeze_last_blocks


def blobs(seed: int, per_class: int = 40, classes: int = 3, dim: int = 16, spread: float = 1.0):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 3, size=(classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    return (centres[labels] + rng.normal(0, spread, size=(len(labels), dim))).astype(np.float32) * 100 + 500, labels


def test_head_learns_separable_features_and_is_a_two_name_functional_model():
    (train_x, train_y), (val_x, val_y) = blobs(0), blobs(1)
    trained = train_head(train_x, train_y, val_x, val_y, 3, TrainingConfig(epochs=10, hidden_units=32), seed=0)
    model = trained.model
    assert [tensor.name for tensor in model.inputs] == [FEATURES] and model.output_names == [PROBABILITIES]
    assert not isinstance(model, keras.Sequential)
    assert [layer.name for layer in model.layers[1:]] == ["standardize", "dropout", "hidden", PROBABILITIES]
    accuracy = float(np.mean(predict_probabilities(model, val_x).argmax(axis=1) == val_y))
    assert accuracy > 0.95  # features scaled by 100 and shifted by 500: the frozen standardization copes
    assert set(trained.history[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}
    assert [record["epoch"] for record in trained.history] == list(range(len(trained.history)))


def test_linear_head_has_no_hidden_layer():
    (train_x, train_y), (val_x, val_y) = blobs(0), blobs(1)
    model = train_head(train_x, train_y, val_x, val_y, 3, TrainingConfig(epochs=1, hidden_units=0)).model
    assert [layer.name for layer in model.layers[1:]] == ["standardize", "dropout", PROBABILITIES]


def test_same_seed_same_head_other_seed_other_head():
    (train_x, train_y), (val_x, val_y) = blobs(0), blobs(1)
    config = TrainingConfig(epochs=3, hidden_units=8, optimizer="adam", learning_rate=1e-2)
    first, again, other = (train_head(train_x, train_y, val_x, val_y, 3, config, seed) for seed in (5, 5, 6))
    assert first.history == again.history
    for a, b in zip(first.model.get_weights(), again.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.model.get_weights()[-2], other.model.get_weights()[-2])


def test_early_stopping_on_validation_loss():
    train_x, train_y = blobs(0)
    val_x, _ = blobs(1)
    shuffled = np.random.default_rng(0).permutation(len(val_x)) % 3  # validation labels unrelated to the features
    config = TrainingConfig(epochs=40, hidden_units=64, early_stopping_patience=2)
    history = train_head(train_x, train_y, val_x, shuffled, 3, config).history
    assert len(history) < 40
    best = min(range(len(history)), key=lambda epoch: history[epoch]["val_loss"])
    assert len(history) == best + 1 + 2


def test_bad_features_are_refused():
    (train_x, train_y), (val_x, val_y) = blobs(0), blobs(1)
    config = TrainingConfig(epochs=1)
    broken = train_x.copy()
    broken[3, 2] = np.inf
    with pytest.raises(PipelineStepError, match="NaN or infinite"):
        train_head(broken, train_y, val_x, val_y, 3, config)
    with pytest.raises(PipelineStepError, match=r"labels must lie in \[0, 2\)"):
        train_head(train_x, train_y, val_x, val_y, 2, config)
    with pytest.raises(PipelineStepError, match="validation features have 8 dimensions"):
        train_head(train_x, train_y, val_x[:, :8], val_y, 3, config)


def test_unfreeze_keeps_batch_normalization_frozen():
    featurizer = build_featurizer("resnet50", "none", 32)
    assert unfreeze_last_blocks(featurizer, 2) == ["conv5_block2", "conv5_block3"]
    trainable = {layer.name for layer in featurizer.model.layers if layer.trainable and layer.weights}
    assert trainable == {f"conv5_block{block}_{conv}_conv" for block in (2, 3) for conv in (1, 2, 3)}


def test_unfreeze_counts_blocks_from_the_end():
    featurizer = build_featurizer("vgg16", "none", 32)
    assert unfreeze_last_blocks(featurizer, 2) == ["fc1", "fc2"]
    trainable = {layer.name for layer in featurizer.model.layers if layer.trainable and layer.weights}
    assert trainable == {"fc1", "fc2"}
    assert unfreeze_last_blocks(featurizer, 0) == [] and not featurizer.model.trainable_weights
    with pytest.raises(PipelineStepError, match="cannot unfreeze 8 blocks: featurizer vgg16 has 7"):
        unfreeze_last_blocks(featurizer, 8)


def test_full_mode_trains_the_last_block_on_images_and_leaves_the_rest(digits):
    splits = digits.splits[digits.splits["label"].isin(["0", "1", "7"])]
    classes = ["0", "1", "7"]
    featurizer = build_featurizer("vgg16", "none", 32, seed=0)
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in featurizer.model.layers}
    features = featurize_splits(splits, classes, featurizer, featurizer.info.preprocessing)
    config = TrainingConfig(mode="full", unfreeze_blocks=1, epochs=1, hidden_units=0, early_stopping_patience=0)
    head = train_head(
        features["train"].features, features["train"].labels, features["val"].features, features["val"].labels, 3, config
    )
    stages = fine_tune_full(featurizer, head, splits, classes, config)

    tuned = stages.featurizer
    assert tuned.info.fine_tuned and tuned.info.fingerprint != featurizer.info.fingerprint
    assert [record["epoch"] for record in stages.history] == [0, 1]
    changed = {
        layer.name
        for layer in tuned.model.layers
        if any(not np.array_equal(w, b) for w, b in zip(layer.get_weights(), before[layer.name]))
    }
    assert changed == {"fc2"}
    for layer in featurizer.model.layers:  # the given featurizer is untouched
        for w, b in zip(layer.get_weights(), before[layer.name]):
            np.testing.assert_array_equal(w, b)
    assert [t.name for t in tuned.model.inputs] == ["input"] and stages.head.output_names == [PROBABILITIES]
