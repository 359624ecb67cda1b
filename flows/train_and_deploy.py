"""`train_and_deploy`: from a folder of labelled images to a deployed service, one task per step."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from tasks.config import STEPS, PipelineConfig
from tasks.intake import validate_data


def _reached(config: PipelineConfig, step: str) -> bool:
    """True once ``step`` is the last one the run was asked to do."""
    return STEPS.index(step) >= STEPS.index(config.until)


@flow(name="train_and_deploy", log_prints=True)
def train_and_deploy(config: PipelineConfig) -> dict:
    """Run the pipeline up to ``config.until`` and return the run summary (the CLI's ``--json``)."""
    summary: dict = {"flow_run_id": str(flow_run.get_id())}
    intake = validate_data(config.data_dir)
    summary.update(intake.summary())
    if _reached(config, "validate"):
        return summary
    raise NotImplementedError
