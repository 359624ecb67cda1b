"""The data stage's Prefect tasks: validate and split a dataset of any model kind, watch a data folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from fpgaflow.tasks.artifacts import publish_table
from fpgaflow.tasks.data.intake import IntakeResult, validation_rows
from fpgaflow.tasks.data.watch import DatasetCheck, check_dataset, emit_dataset_updated, record_fingerprint
from fpgaflow.tasks.errors import DataValidationError
from fpgaflow.tasks.settings import PipelineSettings

if TYPE_CHECKING:
    from fpgaflow.tasks.kinds import ModelKind


@task(name="validate-data", persist_result=False)
def validate_data(kind: ModelKind, data_dir: Path, settings: PipelineSettings | None = None) -> IntakeResult:
    """The kind's intake as a Prefect task; publishes the rule table (artifact ``data-validation``) either way."""
    try:
        result = kind.intake(data_dir, settings)
    except DataValidationError as error:
        publish_table("data-validation", validation_rows(kind.rules, None, error.violations), f"FAILED: {data_dir}")
        raise
    publish_table("data-validation", validation_rows(kind.rules, result, []), kind.intake_caption(result))
    return result


check_dataset_task = task(name="fingerprint-dataset", cache_policy=NO_CACHE)(check_dataset)


emit_dataset_updated_task = task(name="emit-dataset-updated", cache_policy=NO_CACHE)(emit_dataset_updated)


@task(name="record-fingerprint", cache_policy=NO_CACHE)
def record_fingerprint_task(check: DatasetCheck) -> Path:
    return record_fingerprint(Path(check.data_dir), check.fingerprint, check.num_images)
