"""`monitor`: score a holdout folder against the deployed service by its kind's metric (accuracy, or mAP@0.5
for a detector); emit `fpgaflow.model.degraded` when the score falls below the threshold."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.events import MODEL_DEGRADED
from fpgaflow.tasks.operations.monitoring import result_description
from fpgaflow.tasks.operations.steps import emit_model_degraded_task, monitor_endpoint_task


@flow(name="monitor", log_prints=True)
def monitor(
    endpoint: str, data_dir: str, model_name: str, threshold: float | None = None, tls: dict[str, str] | None = None
) -> dict:
    """``endpoint`` is the gateway or node (``HOST:PORT``), ``data_dir`` a folder per class for a classifier or
    an annotated detection folder for a detector, ``threshold`` the lowest acceptable score (default: the
    setting ``monitor_min_accuracy`` or ``monitor_min_map50``), ``tls`` the paths of the client's CA, certificate
    and key (``ca_cert``, ``cert``, ``key``). Artifact ``monitor-quality``: per-class table."""
    result = monitor_endpoint_task(endpoint, Path(data_dir), model_name, threshold, tls=tls)
    print(result_description(result))
    event_id = emit_model_degraded_task(result) if result.degraded else None
    if result.degraded and event_id is None:
        raise PipelineStepError(f"{model_name} is degraded but the Prefect API did not take the {MODEL_DEGRADED} event")
    return {
        "model_name": model_name,
        "endpoint": endpoint,
        "data_dir": result.data_dir,
        "metric": result.metric,
        "score": result.score,
        "images": result.report.images,
        "threshold": result.threshold,
        "degraded": result.degraded,
        "event_id": event_id,
        "skipped": list(result.skipped),
    }
