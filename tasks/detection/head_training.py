"""Training a detector's SSD layers on its cached backbone maps ('head' mode, the default).

The frozen VGG-16 backbone runs once per image (:mod:`fpgaflow.tasks.detection.feature_maps`); each
epoch then runs only the SSD layers (the conv4_3 scale, fc6/fc7, the extra layers and the box and
class heads) on the cached maps, about a tenth of the detector's multiply-accumulates at 300 px.
The SSD-layers model calls the detector's own layers, so training it trains the detector. Untrained
and trained mAP are measured on the same cached maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd

from fpgaflow.tasks.config import DetectionConfig, PipelineConfig, TrainingConfig
from fpgaflow.tasks.detection.average_precision import GroundTruth, MeanAveragePrecision, detections_of, mean_average_precision
from fpgaflow.tasks.detection.detect import detect
from fpgaflow.tasks.detection.epoch_report import EpochReport
from fpgaflow.tasks.detection.feature_maps import (
    CUT_LAYERS,
    FeatureMapCache,
    FeatureMaps,
    extract_feature_maps,
    featurizer_model,
    graph_fingerprint,
    map_cache_dir,
)
from fpgaflow.tasks.detection.geometry import conf_name, loc_name
from fpgaflow.tasks.detection.ground_truth import load_ground_truth
from fpgaflow.tasks.detection.loss import SsdLoss
from fpgaflow.tasks.detection.model import Detector, describe
from fpgaflow.tasks.detection.training import (
    GLOBAL_CLIPNORM,
    PREDICT_BATCH_SIZE,
    TrainedDetector,
    concatenated_heads,
    encode_targets,
)
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.settings import PipelineSettings
from fpgaflow.tasks.training.head import make_optimizer, seed_everything

SPLITS = ("train", "val", "test")


class MapBatches(keras.utils.PyDataset):
    """(feature maps, targets) batches from memory, reshuffled each epoch with a seeded order."""

    def __init__(self, maps: FeatureMaps, targets: np.ndarray, batch_size: int, shuffle: bool, seed: int) -> None:
        super().__init__()
        self.maps, self.targets, self.batch_size, self.shuffle = maps, targets, batch_size, shuffle
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(maps)) if shuffle else np.arange(len(maps))

    def __len__(self) -> int:
        return -(-len(self.maps) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        chosen = np.sort(self.order[index * self.batch_size : (index + 1) * self.batch_size])
        return tuple(self.maps.rows(chosen)), self.targets[chosen]

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.order = self.rng.permutation(len(self.maps))


def heads_model(detector: Detector, featurizer: keras.Model) -> keras.Model:
    """Backbone maps → the SSD layers and heads, concatenated ``[N, P, 4 + classes + 1]``; shares the detector's layers."""
    info, model = detector.info, detector.model
    inputs = [
        keras.Input(shape=tuple(output.shape[1:]), name=name, dtype="float32")
        for name, output in zip(CUT_LAYERS, featurizer.outputs)
    ]
    maps = [model.get_layer("conv4_3_norm_scale")(inputs[0])]
    if info.feature_maps > 1:
        x = model.get_layer("fc7")(model.get_layer("fc6")(inputs[1]))
        maps.append(x)
        for number in range(8, 8 + info.feature_maps - 2):
            x = model.get_layer(f"conv{number}_2")(model.get_layer(f"conv{number}_1")(x))
            maps.append(x)
    heads = {}
    for k, feature_map in enumerate(maps):
        heads[loc_name(k)] = model.get_layer(loc_name(k))(feature_map)
        heads[conf_name(k)] = model.get_layer(conf_name(k))(feature_map)
    return keras.Model(inputs, concatenated_heads(heads, info.feature_maps, info.num_classes), name="ssd_heads")


def evaluate_maps(
    heads: keras.Model,
    detector: Detector,
    maps: FeatureMaps,
    truths: Sequence[GroundTruth],
    class_names: Sequence[str],
    detection: DetectionConfig,
) -> MeanAveragePrecision:
    """mAP@0.5 of the heads on cached feature maps, through the numpy CPU stage."""
    priors, found = detector.layout.priors(), []
    for start in range(0, len(maps), PREDICT_BATCH_SIZE):
        combined = np.asarray(heads(maps.rows(slice(start, start + PREDICT_BATCH_SIZE)), training=False), np.float32)
        found += detections_of(detect(combined[..., :4], combined[..., 4:], priors, detection))
    return mean_average_precision(found, truths, class_names)


@dataclass
class HeadTraining:
    trained: TrainedDetector
    untrained: MeanAveragePrecision  # test split, before training
    evaluated: MeanAveragePrecision  # test split, after training
    maps_from_cache: int  # images whose feature maps were read back from the cache
    maps_computed: int


def fit_heads(
    heads: keras.Model,
    detector: Detector,
    train: tuple[FeatureMaps, np.ndarray],
    val: tuple[FeatureMaps, Sequence[GroundTruth], np.ndarray],
    class_names: Sequence[str],
    training: TrainingConfig,
    detection: DetectionConfig,
    seed: int,
) -> list[dict]:
    """Fit the heads on the train maps and targets, reporting each epoch, early-stopping on the val loss."""
    (train_maps, train_targets), (val_maps, val_truths, val_targets) = train, val
    batches = MapBatches(train_maps, train_targets, training.batch_size, shuffle=True, seed=seed)
    heads.compile(
        optimizer=make_optimizer(training, global_clipnorm=GLOBAL_CLIPNORM),
        loss=SsdLoss(detection.negative_ratio, detection.loc_weight),
    )
    callbacks: list[keras.callbacks.Callback] = [
        EpochReport(
            training.epochs,
            len(batches),
            lambda: evaluate_maps(heads, detector, val_maps, val_truths, class_names, detection).map50,
        )
    ]
    if training.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=training.early_stopping_patience, restore_best_weights=True
            )
        )
    fitted = heads.fit(
        batches,
        validation_data=MapBatches(val_maps, val_targets, training.batch_size, shuffle=False, seed=seed),
        epochs=training.epochs,
        callbacks=callbacks,
        verbose=0,
    )
    return [
        {"epoch": epoch, **{key: float(values[epoch]) for key, values in fitted.history.items()}}
        for epoch in range(len(fitted.history.get("loss", [])))
    ]


def train_detector_heads(
    detector: Detector,
    splits: pd.DataFrame,
    class_names: Sequence[str],
    config: PipelineConfig,
    settings: PipelineSettings,
) -> HeadTraining:
    """Feature maps of every split (cached), heads trained on train/val, mAP@0.5 on test before and after."""
    if len(class_names) != detector.info.num_classes:
        raise PipelineStepError(
            f"the detector scores {detector.info.num_classes} classes but {len(class_names)} class names were given"
        )
    seed_everything(config.seed)
    featurizer = featurizer_model(detector)
    spec = detector.info.preprocessing
    directory = map_cache_dir(settings)
    cache = FeatureMapCache(directory, graph_fingerprint(featurizer, spec)) if directory else None
    rows = {name: splits[splits["split"] == name] for name in SPLITS}
    maps = {
        name: extract_feature_maps(
            featurizer, list(part["path"]), spec, config.training.featurize_batch_size, cache, f"feature maps {name}"
        )
        for name, part in rows.items()
    }
    truths = {name: load_ground_truth(part, class_names) for name, part in rows.items()}
    priors = detector.layout.priors()
    targets = {name: encode_targets(truths[name], priors, config.detection.match_iou) for name in ("train", "val")}
    heads = heads_model(detector, featurizer)
    untrained = evaluate_maps(heads, detector, maps["test"], truths["test"], class_names, config.detection)
    history = fit_heads(
        heads,
        detector,
        (maps["train"], targets["train"]),
        (maps["val"], truths["val"], targets["val"]),
        class_names,
        config.training,
        config.detection,
        config.seed,
    )
    evaluated = evaluate_maps(heads, detector, maps["test"], truths["test"], class_names, config.detection)
    info = detector.info
    detector.info = describe(detector.model, info.weights, info.seed, info.width, fine_tuned=True)
    return HeadTraining(
        TrainedDetector(detector, history, []),
        untrained,
        evaluated,
        maps_from_cache=sum(part.from_cache for part in maps.values()),
        maps_computed=sum(part.computed for part in maps.values()),
    )
