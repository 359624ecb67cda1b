"""The training stage's Prefect tasks: the train step of any model kind, and the classifier's pieces on their own."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from fpgaflow.tasks.artifacts import publish_table
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.training.evaluation import Evaluation, evaluate_predictions
from fpgaflow.tasks.training.export import export_model
from fpgaflow.tasks.training.head import fine_tune_full, train_head

if TYPE_CHECKING:
    from fpgaflow.tasks.kinds import ModelKind
    from fpgaflow.tasks.kinds.protocol import TrainedOutcome


@task(name="train", cache_policy=NO_CACHE, persist_result=False)
def train_task(
    kind: ModelKind,
    splits: pd.DataFrame,
    class_names: Sequence[str],
    dataset_fingerprint: str,
    config: PipelineConfig,
    output_dir: Path,
) -> TrainedOutcome:
    """Train, evaluate and export a model of ``kind``; publishes the kind's training artifacts."""
    outcome = kind.train(splits, class_names, dataset_fingerprint, config, output_dir)
    kind.publish_training(outcome)
    return outcome


train_head_task = task(name="train-head", cache_policy=NO_CACHE, persist_result=False)(train_head)


fine_tune_full_task = task(name="fine-tune-full", cache_policy=NO_CACHE, persist_result=False)(fine_tune_full)


export_model_task = task(name="export-model", cache_policy=NO_CACHE, persist_result=False)(export_model)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_predictions_task(
    probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str], output_dir: Path | None = None
) -> Evaluation:
    evaluation = evaluate_predictions(probabilities, labels, class_names, output_dir)
    publish_table(
        "test-metrics-per-class",
        evaluation.per_class,
        ", ".join(f"{key} {value:.4f}" for key, value in evaluation.metrics.items()),
    )
    return evaluation
