"""Fine-tuning: a classifier head on features (the CPU stage), and optionally the featurizer's last blocks.

The head is a functional Keras model ``features`` [N, D] → ``probabilities`` [N, classes]:
standardize (mean and std of the training features, frozen into the model) → dropout →
dense (relu, ``hidden_units``; none when 0) → dense softmax. It trains on any features, so the
numerics step can retrain it on features computed in a quantized format. Training is seeded and
repeatable: the same seed and inputs give the same weights and history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd

from fpgaflow.tasks.config import TrainingConfig
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.featurizers.catalog import FEATURES, Featurizer, architecture, describe, layer_blocks, seed_everything
from fpgaflow.tasks.featurizers.features import label_indices
from fpgaflow.tasks.training.batches import ImageBatches
from fpgaflow.tasks.training.epoch_progress import EpochProgress

PROBABILITIES = "probabilities"
# A feature whose training values barely vary is divided by at least this share of the mean std, so a
# tiny shift at inference time (another numeric format, another image) cannot blow it up.
MIN_RELATIVE_STD = 1e-2
# End-to-end training moves the featurizer's convolutions: a tenth of the head's learning rate and the
# gradient's global norm clipped, else a few large steps on unnormalised features make the loss diverge.
FULL_MODE_LEARNING_RATE_FACTOR = 0.1
FULL_MODE_GLOBAL_CLIPNORM = 1.0


def predict_probabilities(head: keras.Model, features: np.ndarray) -> np.ndarray:
    """Class probabilities [N, C] of the head for features [N, D] (inference mode)."""
    return np.asarray(head(np.asarray(features, dtype=np.float32), training=False), dtype=np.float32)


@dataclass
class TrainedHead:
    model: keras.Model
    history: list[dict]  # one record per epoch: epoch, loss, accuracy, val_loss, val_accuracy


@dataclass
class TrainedStages:
    featurizer: Featurizer  # the FPGA stage (its info has fine_tuned=True after 'full' mode)
    head: keras.Model  # the CPU stage
    history: list[dict]


def make_optimizer(
    config: TrainingConfig, learning_rate: float | None = None, global_clipnorm: float | None = None
) -> keras.optimizers.Optimizer:
    rate = config.learning_rate if learning_rate is None else learning_rate
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=rate, momentum=config.momentum, global_clipnorm=global_clipnorm)
    return keras.optimizers.Adam(learning_rate=rate, global_clipnorm=global_clipnorm)


def build_head(train_features: np.ndarray, num_classes: int, config: TrainingConfig) -> keras.Model:
    """The classifier head; its standardization is fitted to ``train_features``."""
    mean = train_features.mean(axis=0, dtype=np.float64)
    std = train_features.std(axis=0, dtype=np.float64)
    std = np.maximum(std, MIN_RELATIVE_STD * max(float(std.mean()), 1e-12))
    inputs = keras.Input(shape=(train_features.shape[1],), name=FEATURES, dtype="float32")
    x = keras.layers.Normalization(mean=mean.astype(np.float32), variance=(std**2).astype(np.float32), name="standardize")(inputs)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    if config.hidden_units:
        x = keras.layers.Dense(config.hidden_units, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=PROBABILITIES)(x)
    return keras.Model(inputs, outputs, name="classifier_head")


def _check_features(name: str, features: np.ndarray, labels: np.ndarray, num_classes: int) -> None:
    if features.ndim != 2 or len(features) == 0:
        raise PipelineStepError(f"{name} features must be a non-empty [N, D] array, got shape {features.shape}")
    if len(labels) != len(features):
        raise PipelineStepError(f"{name}: {len(features)} feature rows but {len(labels)} labels")
    if not np.isfinite(features).all():
        raise PipelineStepError(f"{name} features contain NaN or infinite values: the featurizer's outputs overflowed")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise PipelineStepError(f"{name} labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")


def _callbacks(config: TrainingConfig, progress: str = "") -> list[keras.callbacks.Callback]:
    """Early stopping (unless patience 0), and with a ``progress`` description a line (or bar) per epoch."""
    callbacks: list[keras.callbacks.Callback] = [EpochProgress(progress, config.epochs)] if progress else []
    if config.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping_patience, restore_best_weights=True)
        )
    return callbacks


def _history(fit_history: keras.callbacks.History, first_epoch: int) -> list[dict]:
    records = fit_history.history
    return [
        {"epoch": first_epoch + index, **{key: float(values[index]) for key, values in records.items()}}
        for index in range(len(fit_history.epoch))
    ]


def train_head(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    num_classes: int,
    config: TrainingConfig,
    seed: int = 0,
    progress: str = "",
) -> TrainedHead:
    """Train the head on features (any extractor's) with early stopping on the validation loss.

    With a ``progress`` description each epoch says its loss and accuracy (:mod:`fpgaflow.tasks.progress`)."""
    if num_classes < 2:
        raise PipelineStepError(f"a classifier needs at least 2 classes, got {num_classes}")
    train_features, val_features = (np.asarray(part, dtype=np.float32) for part in (train_features, val_features))
    train_labels, val_labels = (np.asarray(part, dtype=np.int64) for part in (train_labels, val_labels))
    _check_features("training", train_features, train_labels, num_classes)
    _check_features("validation", val_features, val_labels, num_classes)
    if val_features.shape[1] != train_features.shape[1]:
        raise PipelineStepError(
            f"validation features have {val_features.shape[1]} dimensions, training features {train_features.shape[1]}"
        )
    seed_everything(seed)
    head = build_head(train_features, num_classes, config)
    head.compile(optimizer=make_optimizer(config), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    fitted = head.fit(
        train_features,
        train_labels,
        validation_data=(val_features, val_labels),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        callbacks=_callbacks(config, progress),
        verbose=0,
    )
    return TrainedHead(head, _history(fitted, 0))


def copy_model(model: keras.Model) -> keras.Model:
    """Same architecture, layer names and weights; training the copy leaves ``model`` as it was."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def unfreeze_last_blocks(featurizer: Featurizer, count: int) -> list[str]:
    """Make the last ``count`` blocks trainable (batch normalization stays frozen, in inference mode); returns their names."""
    blocks = layer_blocks(featurizer.model, featurizer.info.name)
    if count > len(blocks):
        raise PipelineStepError(f"cannot unfreeze {count} blocks: featurizer {featurizer.info.name} has {len(blocks)}")
    first_trainable = blocks[-count][1] if count else len(featurizer.model.layers)
    for index, layer in enumerate(featurizer.model.layers):
        layer.trainable = index >= first_trainable and not isinstance(layer, keras.layers.BatchNormalization)
    return [name for name, _ in blocks[len(blocks) - count :]]


def fine_tune_full(
    featurizer: Featurizer,
    head: TrainedHead,
    splits: pd.DataFrame,
    class_names: Sequence[str],
    config: TrainingConfig,
    seed: int = 0,
    progress: str = "",
) -> TrainedStages:
    """'full' mode: after the head, train the last ``config.unfreeze_blocks`` blocks and the head end to end on images.

    Trains copies: the given featurizer and head keep their weights (and the featurizer its fingerprint).
    """
    seed_everything(seed)
    info = featurizer.info
    model, head_model = copy_model(featurizer.model), copy_model(head.model)
    unfreeze_last_blocks(Featurizer(model, info), config.unfreeze_blocks)
    spec = info.preprocessing
    train_rows, val_rows = splits[splits["split"] == "train"], splits[splits["split"] == "val"]
    if train_rows.empty or val_rows.empty:
        raise PipelineStepError("'full' training needs images in both the train and the val split")
    batches = {
        name: ImageBatches(
            list(rows["path"]),
            label_indices(rows["label"], class_names),
            spec,
            config.batch_size,
            shuffle=name == "train",
            seed=seed,
        )
        for name, rows in (("train", train_rows), ("val", val_rows))
    }
    end_to_end = keras.Model(model.inputs, head_model(model.outputs[0]), name="end_to_end")
    end_to_end.compile(
        optimizer=make_optimizer(config, config.learning_rate * FULL_MODE_LEARNING_RATE_FACTOR, FULL_MODE_GLOBAL_CLIPNORM),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    fitted = end_to_end.fit(
        batches["train"],
        validation_data=batches["val"],
        epochs=config.epochs,
        shuffle=False,
        callbacks=_callbacks(config, progress),
        verbose=0,
    )  # ImageBatches shuffles itself, seeded
    tuned = Featurizer(model, describe(model, architecture(info.name), info.weights, info.seed, info.input_size, fine_tuned=True))
    return TrainedStages(tuned, head_model, head.history + _history(fitted, len(head.history)))
