"""Training an SSD detector: ground truth from annotation files, matched targets, the SSD loss, seeded fitting.

This module trains end to end on the images ('full' mode): the last ``unfreeze_blocks`` VGG blocks,
the SSD extra layers and the heads learn. The default 'head' mode, which trains the SSD layers on
cached backbone maps, is :mod:`fpgaflow.tasks.detection.head_training` and shares the pieces here.
Targets are matched once per image (IoU >= ``match_iou`` plus the best prior of every object),
images are read and preprocessed batch by batch with the one preprocessing, the order is
reshuffled each epoch with a seeded generator, each epoch is reported with its validation mAP, and
early stopping keeps the weights of the best validation loss. The same seed and data give the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd

from fpgaflow.tasks.config import DetectionConfig, TrainingConfig
from fpgaflow.tasks.detection.average_precision import GroundTruth, MeanAveragePrecision, detections_of, mean_average_precision
from fpgaflow.tasks.detection.boxes import match
from fpgaflow.tasks.detection.detect import detect
from fpgaflow.tasks.detection.epoch_report import EpochReport
from fpgaflow.tasks.detection.geometry import conf_name, flatten_heads, loc_name
from fpgaflow.tasks.detection.ground_truth import load_ground_truth
from fpgaflow.tasks.detection.loss import SsdLoss
from fpgaflow.tasks.detection.model import BACKBONE_PREFIX, Detector, backbone_layers, describe
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.featurizers.features import load_images
from fpgaflow.tasks.training.batches import ImageBatches
from fpgaflow.tasks.training.head import make_optimizer, seed_everything

# SGD on a freshly initialised detector takes a few large steps early on; a clipped gradient norm keeps it stable.
GLOBAL_CLIPNORM = 1.0
PREDICT_BATCH_SIZE = 16


def encode_targets(truths: Sequence[GroundTruth], priors: np.ndarray, match_iou: float) -> np.ndarray:
    """Targets ``[N, P, 5]`` of the SSD loss: encoded offsets and the 1-based class (0 = background) per prior."""
    targets = np.zeros((len(truths), len(priors), 5), np.float32)
    for row, truth in enumerate(truths):
        offsets, classes = match(truth.boxes, truth.classes + 1, priors, match_iou)
        targets[row, :, :4], targets[row, :, 4] = offsets, classes
    return targets


def _concatenated(tensors: list, name: str):
    return keras.layers.Concatenate(axis=1, name=name)(tensors) if len(tensors) > 1 else tensors[0]


def concatenated_heads(heads: dict, feature_maps: int, num_classes: int) -> keras.KerasTensor:
    """Head tensors by name → one tensor ``[N, P, 4 + classes + 1]`` in prior order (offsets, then logits)."""
    locs = [keras.layers.Reshape((-1, 4), name=f"{loc_name(k)}_flat")(heads[loc_name(k)]) for k in range(feature_maps)]
    confs = [
        keras.layers.Reshape((-1, num_classes + 1), name=f"{conf_name(k)}_flat")(heads[conf_name(k)]) for k in range(feature_maps)
    ]
    return keras.layers.Concatenate(axis=-1, name="offsets_and_logits")(
        [_concatenated(locs, "offsets"), _concatenated(confs, "logits")]
    )


def training_model(detector: Detector) -> keras.Model:
    """The detector with its heads concatenated in prior order: ``[N, P, 4 + classes + 1]`` for the SSD loss."""
    info, model = detector.info, detector.model
    heads = dict(zip(model.output_names, model.outputs))
    return keras.Model(model.inputs, concatenated_heads(heads, info.feature_maps, info.num_classes), name="ssd_training")


def set_trainable(model: keras.Model, mode: str, unfreeze_blocks: int) -> list[str]:
    """Freeze the VGG-16 convolutions ('head') or all but their last ``unfreeze_blocks`` blocks ('full').

    Returns the trained VGG blocks.
    """
    blocks = sorted(
        {layer.name.split("_")[0] for layer in backbone_layers(model)}, key=lambda name: int(name.removeprefix(BACKBONE_PREFIX))
    )
    trained = blocks[len(blocks) - unfreeze_blocks :] if mode == "full" and unfreeze_blocks else []
    if mode == "full" and unfreeze_blocks > len(blocks):
        raise PipelineStepError(f"cannot unfreeze {unfreeze_blocks} blocks: the VGG-16 backbone has {len(blocks)}")
    for layer in model.layers:
        if layer.name.startswith(BACKBONE_PREFIX):
            layer.trainable = layer.name.split("_")[0] in trained
        else:
            layer.trainable = True
    return trained


@dataclass
class TrainedDetector:
    detector: Detector
    history: list[dict]  # one record per epoch: epoch, loss, val_loss
    trained_blocks: list[str]


def train_detector(
    detector: Detector,
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    class_names: Sequence[str],
    training: TrainingConfig,
    detection: DetectionConfig,
    seed: int = 0,
) -> TrainedDetector:
    """Fit the detector in place on the train rows (``path``, ``annotation``), early-stopping on the val rows' loss."""
    if train_rows.empty or val_rows.empty:
        raise PipelineStepError("training a detector needs images in both the train and the val split")
    if len(class_names) != detector.info.num_classes:
        raise PipelineStepError(
            f"the detector scores {detector.info.num_classes} classes but {len(class_names)} class names were given"
        )
    seed_everything(seed)
    priors = detector.layout.priors()
    spec = detector.info.preprocessing
    batches = {
        name: ImageBatches(
            list(rows["path"]),
            encode_targets(load_ground_truth(rows, class_names), priors, detection.match_iou),
            spec,
            training.batch_size,
            shuffle=name == "train",
            seed=seed,
        )
        for name, rows in (("train", train_rows), ("val", val_rows))
    }
    trained_blocks = set_trainable(detector.model, training.mode, training.unfreeze_blocks)
    model = training_model(detector)
    model.compile(
        optimizer=make_optimizer(training, global_clipnorm=GLOBAL_CLIPNORM),
        loss=SsdLoss(detection.negative_ratio, detection.loc_weight),
    )
    callbacks: list[keras.callbacks.Callback] = [
        EpochReport(
            training.epochs,
            len(batches["train"]),
            lambda: evaluate_detector(detector, val_rows, class_names, detection).map50,
        )
    ]
    if training.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=training.early_stopping_patience, restore_best_weights=True
            )
        )
    fitted = model.fit(
        batches["train"], validation_data=batches["val"], epochs=training.epochs, shuffle=False, callbacks=callbacks, verbose=0
    )  # ImageBatches shuffles itself, seeded
    history = [
        {"epoch": epoch, **{key: float(values[epoch]) for key, values in fitted.history.items()}}
        for epoch in range(len(fitted.history.get("loss", [])))
    ]
    info = detector.info
    detector.info = describe(detector.model, info.weights, info.seed, info.width, fine_tuned=True)
    return TrainedDetector(detector, history, trained_blocks)


def predict_heads(detector: Detector, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box offsets ``[N, P, 4]`` and class logits ``[N, P, classes + 1]`` of preprocessed images."""
    info = detector.info
    parts = [
        flatten_heads(detector(images[start : start + PREDICT_BATCH_SIZE]), info.feature_maps, info.num_classes)
        for start in range(0, len(images), PREDICT_BATCH_SIZE)
    ]
    return np.concatenate([loc for loc, _ in parts]), np.concatenate([logits for _, logits in parts])


def predict_detections(detector: Detector, images: np.ndarray, detection: DetectionConfig) -> dict[str, np.ndarray]:
    """The four detection outputs of preprocessed images: Keras heads, then the numpy CPU stage."""
    loc, logits = predict_heads(detector, images)
    return detect(loc, logits, detector.layout.priors(), detection)


def evaluate_detector(
    detector: Detector, rows: pd.DataFrame, class_names: Sequence[str], detection: DetectionConfig
) -> MeanAveragePrecision:
    """mAP@0.5 of the detector on the rows' images (read batch by batch) against their annotations."""
    if rows.empty:
        raise PipelineStepError("no images to evaluate the detector on")
    paths = list(rows["path"])
    found = []
    for start in range(0, len(paths), PREDICT_BATCH_SIZE):
        images = load_images(paths[start : start + PREDICT_BATCH_SIZE], detector.info.preprocessing)
        found += detections_of(predict_detections(detector, images, detection))
    return mean_average_precision(found, load_ground_truth(rows, class_names), class_names)
