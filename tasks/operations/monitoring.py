"""Monitoring a deployed model: score a holdout folder against its endpoint over gRPC with the measure of the
kind it serves (accuracy on a folder per class, mAP@0.5 on an annotated detection folder), and emit
``fpgaflow.model.degraded`` when the score falls below the threshold."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.fpga_runtime.protocol import BOXES_OUTPUT
from fpgaflow.tasks.detection.quality import MeanAPReport
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.events import MODEL_DEGRADED, emit, model_resource
from fpgaflow.tasks.operations.quality import QualityMeasure
from fpgaflow.tasks.operations.scoring import AccuracyReport
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings


class MonitorResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    endpoint: str
    model_name: str
    data_dir: str
    threshold: float
    report: Annotated[AccuracyReport | MeanAPReport, Field(discriminator="metric")]
    skipped: tuple[str, ...]

    @property
    def metric(self) -> str:
        return self.report.metric

    @property
    def score(self) -> float:
        return self.report.value

    @property
    def degraded(self) -> bool:
        return self.score < self.threshold


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8500`` for IPv6) → (host, port)."""
    host, separator, port = endpoint.strip().rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PipelineStepError(f"endpoint must be HOST:PORT, got {endpoint!r}")
    return host.strip("[]"), int(port)


def monitor_endpoint(
    endpoint: str,
    data_dir: Path,
    model_name: str = "",
    threshold: float | None = None,
    access_token: str | None = None,
    settings: PipelineSettings | None = None,
    tls: dict[str, str] | None = None,
    *,
    measure_of: Callable[[str], QualityMeasure],
) -> MonitorResult:
    """Score every decodable image of ``data_dir`` against ``endpoint`` with the served kind's measure: a
    classifier's accuracy on a folder per class, a detector's mAP@0.5 on an annotated detection folder.

    ``model_name`` selects the model on a gateway (empty: the server's only model); ``threshold``
    defaults to the measure's setting (``monitor_min_accuracy``, ``monitor_min_map50``); ``tls`` the client's
    TLS files by keyword (``ca_cert``, ``cert``, ``key``: paths); ``measure_of`` gives the measure of the kind
    that serves a task (classification or detection).
    """
    settings = settings or get_pipeline_settings()
    if threshold is not None and not 0 <= threshold <= 1:
        raise PipelineStepError(f"threshold must be a fraction between 0 and 1, got {threshold}")
    host, port = parse_endpoint(endpoint)
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise PipelineStepError(f"holdout folder {data_dir} does not exist")
    tls_files = {name: Path(path) for name, path in (tls or {}).items() if path}
    unknown = sorted(set(tls_files) - {"ca_cert", "cert", "key"})
    if unknown:
        raise PipelineStepError(f"tls takes the files ca_cert, cert and key, not {unknown}")
    with PredictionClient(
        host,
        port,
        access_token=access_token,
        service_name=model_name,
        ca_cert=tls_files.get("ca_cert"),
        cert=tls_files.get("cert"),
        key=tls_files.get("key"),
    ) as client:
        measure = measure_of(served_task(client))
        report, skipped = measure.score_endpoint(client, data_dir, settings.monitor_batch_size)
    threshold = measure.default_threshold(settings) if threshold is None else threshold
    return MonitorResult(
        endpoint=endpoint,
        model_name=model_name,
        data_dir=str(data_dir),
        threshold=threshold,
        report=report,  # type: ignore[arg-type]
        skipped=tuple(skipped),
    )


def served_task(client: PredictionClient) -> str:
    """What the model behind ``client`` answers, by its signature: detection when it outputs boxes."""
    return "detection" if BOXES_OUTPUT in client.signature().outputs else "classification"


def degraded_payload(result: MonitorResult) -> dict:
    return {
        "model_name": result.model_name,
        "metric": result.metric,
        "score": result.score,
        "threshold": result.threshold,
        "data_dir": result.data_dir,
        "endpoint": result.endpoint,
        "images": result.report.images,
    }


def emit_model_degraded(result: MonitorResult) -> str | None:
    if not result.model_name:
        raise PipelineStepError("a degraded model must be named: give the model name so the event can say which model to retrain")
    return emit(MODEL_DEGRADED, model_resource(result.model_name), degraded_payload(result))


def result_description(result: MonitorResult) -> str:
    verdict = "DEGRADED" if result.degraded else "ok"
    skipped = f", {len(result.skipped)} undecodable files skipped" if result.skipped else ""
    return (
        f"{verdict}: {result.metric} {result.score:.4f} on {result.report.images} holdout images "
        f"(threshold {result.threshold:.4f}){skipped}"
    )
