"""`check_data`: fingerprint a data folder and emit `fpgaflow.dataset.updated` when it changed."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from fpgaflow.tasks.artifacts import publish_markdown
from fpgaflow.tasks.data.steps import check_dataset_task, emit_dataset_updated_task, record_fingerprint_task
from fpgaflow.tasks.data.watch import check_markdown
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.events import DATASET_UPDATED


@flow(name="check_data", log_prints=True)
def check_data(data_dir: str, model_name: str = "") -> dict:
    """Compare the folder's fingerprint with the last one recorded; on a change emit the event, then
    record the new fingerprint (a change whose event was not taken is not recorded: the next check
    tries again). The first check of a folder only records its fingerprint.

    ``model_name`` travels in the event to the triggered ``retrain`` (empty = the folder's name).
    """
    check = check_dataset_task(Path(data_dir))
    event_id = emit_dataset_updated_task(check, model_name) if check.changed else None
    report = check_markdown(check, event_id)
    publish_markdown("dataset-check", report, f"fingerprint of {check.data_dir}")
    print(report)
    if check.changed and event_id is None:
        raise PipelineStepError(
            f"{check.data_dir} changed but the Prefect API did not take the {DATASET_UPDATED} event; "
            "the new fingerprint is not recorded, so the next check emits it again"
        )
    record_fingerprint_task(check)
    return {
        "data_dir": check.data_dir,
        "fingerprint": check.fingerprint,
        "previous_fingerprint": check.previous_fingerprint,
        "num_images": check.num_images,
        "changed": check.changed,
        "event_id": event_id,
    }
