"""The training stage's Prefect task: the train step of any model kind."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from fpgaflow.tasks.config import PipelineConfig

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
    mlflow_run_id: str,
) -> TrainedOutcome:
    """Train, evaluate and export a model of ``kind``; publishes the kind's training artifacts, which link to
    where the log-training step puts its pictures in the MLflow run ``mlflow_run_id``."""
    outcome = kind.train(splits, class_names, dataset_fingerprint, config, output_dir)
    kind.publish_training(outcome, mlflow_run_id)
    return outcome
