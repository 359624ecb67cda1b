"""Training a detector: build the detector → measure it untrained → train → evaluate mAP → export.

Shaped like :mod:`fpgaflow.tasks.training.train_step` for the train step: one call (``detection_train_step``) from the detection
intake's split manifest, an outcome whose ``summary()`` gives ``featurizer`` and ``metrics`` (with
``map50``), and the exported stages in ``output_dir/model`` (:mod:`fpgaflow.tasks.detection.export`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.detection.export import DetectorFiles, export_detector
from fpgaflow.tasks.detection.geometry import DetectorInfo
from fpgaflow.tasks.detection.head_training import train_detector_heads
from fpgaflow.tasks.detection.model import build_detector
from fpgaflow.tasks.detection.pictures import (
    PRECISION_RECALL_FILE,
    SAMPLE_DETECTIONS_FILE,
    draw_sample_detections,
    plot_precision_recall,
)
from fpgaflow.tasks.detection.training import evaluate_detector, train_detector
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.files import write_text_atomic
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

MODEL_DIR = "model"
EVALUATION_DIR = "evaluation"
PER_CLASS_FILE = "average_precision.csv"


@dataclass(frozen=True)
class DetectionEvaluation:
    """Test-split results: ``metrics`` holds ``map50`` (trained) and ``map50_untrained`` (same detector before training)."""

    metrics: dict[str, float]
    per_class: list[dict]  # class, ap (None without ground truth), ground_truth, detections, true_positives
    class_names: list[str]
    per_class_csv: str | None = None
    pictures: list[str] = field(default_factory=list)  # precision-recall curves and sample detections (PNGs)


@dataclass
class DetectionTrainingOutcome:
    featurizer: DetectorInfo
    history: list[dict]
    evaluation: DetectionEvaluation
    model_files: DetectorFiles
    trained_blocks: list[str]

    def summary(self) -> dict:
        """The part of the run summary (the CLI's ``--json``) this step adds."""
        info = self.featurizer
        return {
            "featurizer": {
                "name": info.name,
                "input_size": info.input_size,
                "feature_maps": info.feature_maps,
                "prior_count": info.prior_count,
            },
            "metrics": dict(self.evaluation.metrics),
        }


def _split(splits: pd.DataFrame, name: str) -> pd.DataFrame:
    rows = splits[splits["split"] == name]
    if rows.empty:
        raise PipelineStepError(f"the split manifest has no {name} images")
    return rows


def detection_train_step(
    splits: pd.DataFrame,
    class_names: Sequence[str],
    dataset_fingerprint: str,
    config: PipelineConfig,
    output_dir: Path,
    settings: PipelineSettings | None = None,
) -> DetectionTrainingOutcome:
    """Train on the manifest's train/val images, evaluate mAP@0.5 on its test images, export into ``output_dir/model``.

    'head' mode (the default) trains the heads on cached feature maps
    (:mod:`fpgaflow.tasks.detection.head_training`); 'full' mode trains end to end on the images.
    ``dataset_fingerprint`` is accepted for the same call shape as the classifier's step (the feature-map cache
    is keyed by each image's own content).
    """
    settings = settings or get_pipeline_settings()
    missing = [column for column in ("path", "annotation", "split") if column not in splits.columns]
    if missing:
        raise PipelineStepError(f"the split manifest lacks the columns {missing}: give the detection intake's splits.csv")
    train, val, test = (_split(splits, name) for name in ("train", "val", "test"))
    detection = config.detection
    detector = build_detector(
        len(class_names), config.weights, config.input_size, config.seed, detection.feature_maps, detection.width, settings
    )
    if config.training.mode == "head":
        heads = train_detector_heads(detector, splits, class_names, config, settings)
        trained, untrained, result = heads.trained, heads.untrained, heads.evaluated
    else:
        untrained = evaluate_detector(detector, test, class_names, detection)
        trained = train_detector(detector, train, val, class_names, config.training, detection, config.seed)
        result = evaluate_detector(trained.detector, test, class_names, detection)
    output_dir = Path(output_dir)
    table = pd.DataFrame(result.per_class)
    csv = write_text_atomic(output_dir / EVALUATION_DIR / PER_CLASS_FILE, table.to_csv(index=False))
    pictures = [
        plot_precision_recall(result.curves, output_dir / EVALUATION_DIR / PRECISION_RECALL_FILE),
        draw_sample_detections(
            list(test["path"]), result.detections, class_names, output_dir / EVALUATION_DIR / SAMPLE_DETECTIONS_FILE
        ),
    ]
    evaluation = DetectionEvaluation(
        metrics={"map50": result.map50, "map50_untrained": untrained.map50},
        per_class=result.per_class,
        class_names=list(class_names),
        per_class_csv=str(csv),
        pictures=[str(path) for path in pictures],
    )
    files = export_detector(trained.detector, class_names, detection, output_dir / MODEL_DIR)
    return DetectionTrainingOutcome(trained.detector.info, trained.history, evaluation, files, trained.trained_blocks)


def detector_markdown(outcome: DetectionTrainingOutcome) -> str:
    info = outcome.featurizer
    lines = [
        f"# {info.name} at {info.input_size}x{info.input_size}, weights `{info.weights}`",
        f"- {info.feature_maps} feature maps {list(info.map_sizes)}, {info.prior_count} default boxes, width {info.width:g}",
        f"- {info.parameter_count:,} parameters, {info.mac_count / 1e9:.3f} GMAC per image",
        f"- trained VGG blocks: {', '.join(outcome.trained_blocks) or 'none (head mode)'}; {len(outcome.history)} epochs",
        f"- model files: `{outcome.model_files.directory}`",
    ]
    return "\n".join(lines) + "\n"


def evaluation_markdown(outcome: DetectionTrainingOutcome) -> str:
    metrics = outcome.evaluation.metrics
    lines = ["# Test split", "", "| metric | value |", "|---|---|"]
    lines += [f"| {key} | {value:.4f} |" for key, value in metrics.items()]
    return "\n".join(lines) + "\n"
