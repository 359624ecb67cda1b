"""How a model kind measures a version's quality, for retraining (in process) and monitoring (over gRPC).

A kind names its metric (the classifier's top-1 ``accuracy``, the detector's ``mAP@0.5``) and scores
a service definition on the test split of a split manifest and a deployed endpoint on a holdout
folder laid out as its training data. Both kinds' reports answer the same questions (overall value,
improvement over another report on the same images, cells of the per-class table), so the retrain
decision and the monitor do not ask which kind they measure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fpgaflow.fpga_runtime.client import PredictionClient
    from fpgaflow.tasks.settings import PipelineSettings


class QualityReport(Protocol):
    @property
    def metric(self) -> str: ...

    @property
    def images(self) -> int: ...

    @property
    def value(self) -> float: ...

    def improvement_over(self, other: QualityReport) -> float:
        """This report's value minus ``other``'s, both measured on the same images."""

    def table(self) -> list[dict]:
        """One row per class, for the monitor's artifact."""

    def class_cells(self) -> dict[str, str]:
        """Each class's cell of the retrain decision's table."""

    def total_cell(self) -> str:
        """The overall cell of the retrain decision's table."""


@dataclass(frozen=True)
class QualityMeasure:
    metric: str  # how artifacts, the CLI and the decision name the measured value
    holdout_layout: str  # what a holdout folder for the monitor holds
    default_threshold: Callable[[PipelineSettings], float]  # the monitor's threshold when none is given
    # (service_dir, split_path, batch_size): a service definition run in this process on the test split
    score_service: Callable[[Path, str | Path, int], QualityReport]
    # (client, holdout_dir, batch_size): a deployed model on a holdout folder → report, relative paths skipped
    score_endpoint: Callable[[PredictionClient, Path, int], tuple[QualityReport, list[str]]]
