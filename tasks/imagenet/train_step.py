"""The ImageNet classifier's train step: nothing to train; build both stages from the ImageNet file and export them.

What it records instead of test metrics is the fp32 model's top-5 on each calibration image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fpgaflow.tasks.artifacts import publish_markdown, publish_table
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.featurizers.features import load_images
from fpgaflow.tasks.imagenet.classifier import build_imagenet_classifier
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings
from fpgaflow.tasks.training.evaluation import Evaluation
from fpgaflow.tasks.training.export import export_model
from fpgaflow.tasks.training.train_step import MODEL_DIR, TrainingOutcome, featurizer_markdown

TOP_K = 5


def top_k_rows(paths: Sequence[str], probabilities: np.ndarray, class_names: Sequence[str], k: int = TOP_K) -> list[dict]:
    rows = []
    for path, scores in zip(paths, probabilities):
        best = np.argsort(scores)[::-1][:k]
        rows.append({"image": Path(path).name, "top5": ", ".join(f"{class_names[i]} {scores[i]:.3f}" for i in best)})
    return rows


def imagenet_train_step(
    splits: pd.DataFrame,
    class_names: Sequence[str],
    dataset_fingerprint: str,
    config: PipelineConfig,
    output_dir: Path,
    settings: PipelineSettings | None = None,
) -> TrainingOutcome:
    settings = settings or get_pipeline_settings()
    featurizer, head = build_imagenet_classifier(config.featurizer, config.input_size, config.seed, settings)
    paths = list(splits["path"])
    probabilities = np.asarray(head(featurizer(load_images(paths, featurizer.info.preprocessing))))
    evaluation = Evaluation(
        metrics={},
        per_class=top_k_rows(paths, probabilities, class_names),
        confusion_matrix=[],
        class_names=list(class_names),
        pictures=[],
    )
    files = export_model(featurizer, head, class_names, Path(output_dir) / MODEL_DIR)
    return TrainingOutcome(featurizer.info, [], evaluation, files, False)


def publish_imagenet_training(outcome: TrainingOutcome, mlflow_run_id: str) -> None:
    publish_markdown(
        "featurizer",
        featurizer_markdown(outcome.featurizer) + "\nWith its Keras ImageNet top (1,000 classes); nothing was trained.\n",
        "architecture, sizes and MACs",
    )
    publish_table("imagenet-top5", outcome.evaluation.per_class, "fp32 top-5 of each calibration image")
