"""What the training, conversion and numerics steps log to the pipeline's MLflow run: curves, test metrics,
parity, per-format results and gates."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import to_jsonable_python

from fpgaflow.tasks.conversion.onnx_stages import ConversionReport
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.registry.client import artifact_links, mlflow_client, talks_to_mlflow
from fpgaflow.tasks.registry.model_card import Gate
from fpgaflow.tasks.registry.runs import (
    ARTIFACT_CONVERSION_REPORT,
    ARTIFACT_EVALUATION_DIR,
    FEATURIZER_PARAM_PREFIX,
    artifact_path,
    log_file,
)
from fpgaflow.tasks.settings import PipelineSettings
from mlflow import MlflowClient

GATE_TAG_PREFIX = "fpgaflow.gate."


TEST_METRIC_PREFIX = "test_"


MAX_METRICS_PER_BATCH = 1000


class FormatOutcome(BaseModel):
    """The numerics step's result for one numeric format, as tracking and the registry record it.

    Built from a mapping or from any object with these attributes (``from_attributes``).
    ``delta`` is the accuracy minus the fp32 accuracy (a fraction; negative = a drop).
    """

    model_config = ConfigDict(from_attributes=True, frozen=True)

    accuracy: float
    delta: float
    passed: bool
    message: str = ""


def coerce_outcomes(outcomes: Mapping[str, Any]) -> dict[str, FormatOutcome]:
    """Per-format results of the numerics step (models, mappings or attribute objects) → FormatOutcome."""
    coerced = {}
    for numeric_format, outcome in outcomes.items():
        try:
            if isinstance(outcome, FormatOutcome):
                coerced[numeric_format] = outcome
            elif isinstance(outcome, Mapping):
                coerced[numeric_format] = FormatOutcome.model_validate(dict(outcome))
            else:
                coerced[numeric_format] = FormatOutcome.model_validate(outcome, from_attributes=True)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors())
            raise PipelineStepError(f"numerics result for {numeric_format!r} is not usable: {problems}") from None
    return coerced


def numerics_metric(numeric_format: str, measure: str) -> str:
    return f"numerics.{numeric_format}.{measure}"


def parity_metric(stage: str, measure: str) -> str:
    return f"parity.{stage}.{measure}"


def evaluation_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """A run's evaluation metrics without their ``test_`` prefix."""
    return {key.removeprefix(TEST_METRIC_PREFIX): value for key, value in metrics.items() if key.startswith(TEST_METRIC_PREFIX)}


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise PipelineStepError(f"{what} must be a number, got {value!r}")
    return float(value)


def _log_metrics(client: MlflowClient, run_id: str, metrics: Iterable[Metric]) -> None:
    batch = list(metrics)
    for start in range(0, len(batch), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=batch[start : start + MAX_METRICS_PER_BATCH])


def history_metrics(history: Sequence[Mapping[str, Any]]) -> list[Metric]:
    """Per-epoch training records → MLflow metrics with step = epoch (``epoch`` key, else position)."""
    timestamp = int(time.time() * 1000)
    metrics = []
    for position, record in enumerate(history):
        epoch = int(record.get("epoch", position))
        for key, value in record.items():
            if key != "epoch":
                metrics.append(Metric(key, _number(value, f"history[{position}][{key!r}]"), timestamp, epoch))
    return metrics


@talks_to_mlflow
def log_training(
    run_id: str,
    history: Sequence[Mapping[str, Any]],
    metrics: Mapping[str, Any],
    *,
    per_class: Any = None,
    pictures: Sequence[Path] = (),
    featurizer_info: Any = None,
    settings: PipelineSettings | None = None,
) -> None:
    """Training curves (step = epoch), test metrics (``test_`` prefix) and evaluation artifacts (the pictures too)."""
    client = mlflow_client(settings)
    timestamp = int(time.time() * 1000)
    evaluation = [
        Metric(f"{TEST_METRIC_PREFIX}{key}", _number(value, f"evaluation metric {key!r}"), timestamp, 0)
        for key, value in metrics.items()
    ]
    _log_metrics(client, run_id, history_metrics(history) + evaluation)
    if per_class is not None:
        client.log_dict(run_id, to_jsonable_python(per_class), f"{ARTIFACT_EVALUATION_DIR}/per_class.json")
    for picture in pictures:
        log_file(run_id, Path(picture), ARTIFACT_EVALUATION_DIR, settings)
    if featurizer_info is not None:
        info = to_jsonable_python(featurizer_info)
        if not isinstance(info, dict):
            raise PipelineStepError(
                f"featurizer_info must be a mapping or a pydantic model, got {type(featurizer_info).__name__}"
            )
        client.log_dict(run_id, info, f"{ARTIFACT_EVALUATION_DIR}/featurizer.json")
        scalars = {key: value for key, value in info.items() if isinstance(value, (str, int, float, bool))}
        client.log_batch(run_id, params=[Param(f"{FEATURIZER_PARAM_PREFIX}{key}", str(value)) for key, value in scalars.items()])


def evaluation_picture_links(run_id: str, pictures: Sequence[str | Path], settings: PipelineSettings | None = None) -> str:
    """Markdown naming where :func:`log_training` puts each picture in the run, linked to it in the MLflow UI."""
    return artifact_links(run_id, [artifact_path(picture, ARTIFACT_EVALUATION_DIR) for picture in pictures], settings)


@talks_to_mlflow
def log_conversion(run_id: str, report: ConversionReport, settings: PipelineSettings | None = None) -> None:
    """Parity measures as metrics and the full conversion report as an artifact."""
    client = mlflow_client(settings)
    timestamp = int(time.time() * 1000)
    metrics = []
    for stage, parity in report.stages.items():
        for measure in ("max_abs_diff", "scaled_diff", "top1_agreement"):
            value = getattr(parity, measure)
            if value is not None:
                metrics.append(Metric(parity_metric(stage, measure), value, timestamp, 0))
    _log_metrics(client, run_id, metrics)
    client.log_text(run_id, report.model_dump_json(indent=2), ARTIFACT_CONVERSION_REPORT)


def numerics_gate(numeric_format: str, outcome: FormatOutcome) -> Gate:
    """The gate of one format; the numerics step's own message when it gave one."""
    detail = outcome.message or f"accuracy {outcome.accuracy:.4f}, delta to fp32 {outcome.delta * 100:+.2f} points"
    return Gate(name=numeric_format, passed=outcome.passed, detail=detail)


@talks_to_mlflow
def log_numerics(run_id: str, outcomes: Mapping[str, Any], settings: PipelineSettings | None = None) -> dict[str, FormatOutcome]:
    """Per-format accuracy and delta to fp32 as metrics; each format's gate outcome as a run tag."""
    coerced = coerce_outcomes(outcomes)
    timestamp = int(time.time() * 1000)
    metrics = []
    for numeric_format, outcome in coerced.items():
        for measure in ("accuracy", "delta"):
            value = getattr(outcome, measure)
            if not math.isfinite(value):
                raise PipelineStepError(f"numerics result for {numeric_format!r} has a non-finite {measure}: {value}")
            metrics.append(Metric(numerics_metric(numeric_format, measure), value, timestamp, 0))
    client = mlflow_client(settings)
    _log_metrics(client, run_id, metrics)
    client.log_batch(
        run_id,
        tags=[RunTag(f"{GATE_TAG_PREFIX}{name}", numerics_gate(name, outcome).tag_value()) for name, outcome in coerced.items()],
    )
    return coerced
