"""The smoke test: the deployed service answers held-out images as the service definition does offline."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from pydantic import BaseModel

from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.operations.monitoring import parse_endpoint
from fpgaflow.tasks.operations.scoring import LabelledImage, OfflineService

T = TypeVar("T")


def timed(call: Callable[..., T], *arguments: object) -> tuple[T, float]:
    """The result of ``call(*arguments)`` and how long it took, in milliseconds."""
    start = time.perf_counter()
    result = call(*arguments)
    return result, (time.perf_counter() - start) * 1000


def latency_caption(latencies_ms: Sequence[float]) -> str:
    values = np.asarray(latencies_ms, np.float64)
    return f"latency p50 {np.percentile(values, 50):.1f} ms, p90 {np.percentile(values, 90):.1f} ms"


class SmokeResult(BaseModel):
    endpoint: str
    images: int
    max_abs_diff: float
    top1_agreement: float
    accuracy: float
    rows: list[dict]
    latencies_ms: list[float]  # of each request, as the client saw it

    def summary(self) -> dict:
        return {
            "images": self.images,
            "max_abs_diff": self.max_abs_diff,
            "top1_agreement": self.top1_agreement,
            "accuracy": self.accuracy,
        }


def smoke_test(
    endpoint: str, service_dir: Path, images: Sequence[LabelledImage], tolerance: float = 1e-4, api_key: str | None = None
) -> SmokeResult:
    """Score ``images`` one by one through ``endpoint`` and compare with the offline run of ``service_dir``.

    Fails the step when an answer differs by more than ``tolerance`` or names another class.
    """
    if not images:
        raise PipelineStepError("the smoke test needs at least one held-out image")
    host, port = parse_endpoint(endpoint)
    encoded = [image.path.read_bytes() for image in images]
    with OfflineService(service_dir) as offline, PredictionClient(host, port, access_token=api_key) as client:
        service = offline.service
        expected = offline.outputs(encoded)[service.default_output]
        answers = [timed(client.score_image, data) for data in encoded]
    served = np.stack([answer for answer, _ in answers])
    names = service.class_names
    rows = [
        {
            "image": image.path.name,
            "label": image.label,
            "served": names[int(got.argmax())],
            "offline": names[int(want.argmax())],
            "max_abs_diff": float(np.max(np.abs(got - want))),
        }
        for image, got, want in zip(images, served, expected)
    ]
    result = SmokeResult(
        endpoint=endpoint,
        images=len(images),
        rows=rows,
        latencies_ms=[milliseconds for _, milliseconds in answers],
        max_abs_diff=float(np.max(np.abs(served - expected))),
        top1_agreement=float(np.mean(served.argmax(axis=1) == expected.argmax(axis=1))),
        accuracy=float(np.mean([row["served"] == row["label"] for row in rows])),
    )
    if result.max_abs_diff > tolerance or result.top1_agreement < 1.0:
        raise PipelineStepError(
            f"the service at {endpoint} does not answer as {service_dir} does offline: max abs difference "
            f"{result.max_abs_diff:.3g} (tolerance {tolerance:g}), top-1 agreement {result.top1_agreement:.2%}"
        )
    return result
