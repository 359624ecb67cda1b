"""Monitoring a deployed model: score a labelled holdout folder against its endpoint over gRPC, and emit
``fpgaflow.model.degraded`` when the accuracy falls below the threshold."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.events import MODEL_DEGRADED, emit, model_resource
from fpgaflow.tasks.operations.scoring import AccuracyReport, folder_images, score_images, top1_names
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings


class MonitorResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    endpoint: str
    model_name: str
    data_dir: str
    threshold: float
    report: AccuracyReport
    skipped: tuple[str, ...]

    @property
    def degraded(self) -> bool:
        return self.report.accuracy < self.threshold


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
) -> MonitorResult:
    """Score every decodable image of ``data_dir`` (folder per class) against ``endpoint``.

    ``model_name`` selects the model on a gateway (empty: the server's only model); ``threshold``
    defaults to the ``monitor_min_accuracy`` setting; ``tls`` the client's TLS files by keyword
    (``ca_cert``, ``cert``, ``key``: paths). Holdout classes the model does not know count
    as wrong answers, and are named in the error when none of the classes is known.
    """
    settings = settings or get_pipeline_settings()
    threshold = settings.monitor_min_accuracy if threshold is None else threshold
    if not 0 <= threshold <= 1:
        raise PipelineStepError(f"threshold must be an accuracy between 0 and 1, got {threshold}")
    host, port = parse_endpoint(endpoint)
    data_dir = Path(data_dir).expanduser().resolve()
    images, skipped = folder_images(data_dir)
    if not images:
        raise PipelineStepError(f"{data_dir} holds no decodable images in class folders to score")
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
        class_names = client.class_names()
        unknown = sorted({image.label for image in images} - set(class_names))
        if len(unknown) == len({image.label for image in images}):
            raise PipelineStepError(
                f"none of the holdout classes {unknown} is a class of the served model ({', '.join(class_names)})"
            )

        def scorer(encoded: list[bytes]) -> list[str]:
            return top1_names(client.score_images(encoded), class_names)

        report = score_images(images, scorer, settings.monitor_batch_size)
    return MonitorResult(
        endpoint=endpoint,
        model_name=model_name,
        data_dir=str(data_dir),
        threshold=threshold,
        report=report,
        skipped=tuple(skipped),
    )


def degraded_payload(result: MonitorResult) -> dict:
    return {
        "model_name": result.model_name,
        "accuracy": result.report.accuracy,
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
        f"{verdict}: accuracy {result.report.accuracy:.4f} on {result.report.images} holdout images "
        f"(threshold {result.threshold:.4f}){skipped}"
    )
