"""The smoke test of a deployed detector: it answers held-out images as its service definition does offline.

The detector's counterpart of :mod:`fpgaflow.tasks.deployment.smoke`: each image goes through the endpoint with the
client's ``detect_image`` and through the service's own stages in this process
(:class:`fpgaflow.tasks.operations.scoring.OfflineService`); the two sets of detections must agree
(:func:`fpgaflow.tasks.detection.parity.detection_parity`), else the step fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.fpga_runtime.protocol import BOXES_OUTPUT, CLASSES_OUTPUT, DETECTION_OUTPUTS, NUM_DETECTIONS_OUTPUT, SCORES_OUTPUT
from fpgaflow.tasks.deployment.smoke import timed
from fpgaflow.tasks.detection.parity import detection_parity
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.operations.monitoring import parse_endpoint
from fpgaflow.tasks.operations.scoring import OfflineService


class DetectionSmokeResult(BaseModel):
    endpoint: str
    images: int
    max_abs_diff: float
    agreement: float
    rows: list[dict]
    latencies_ms: list[float]  # of each request, as the client saw it

    def summary(self) -> dict:
        return {"images": self.images, "max_abs_diff": self.max_abs_diff, "agreement": self.agreement}


def _as_outputs(found, keep: int) -> dict[str, np.ndarray]:
    """A client's :class:`~fpgaflow.fpga_runtime.detections.Detections` back as padded detection outputs of one image."""
    count = len(found)
    boxes, scores, classes = np.zeros((1, keep, 4), np.float32), np.zeros((1, keep), np.float32), np.full((1, keep), -1, np.int64)
    boxes[0, :count], scores[0, :count], classes[0, :count] = found.boxes, found.scores, found.classes
    return {BOXES_OUTPUT: boxes, SCORES_OUTPUT: scores, CLASSES_OUTPUT: classes, NUM_DETECTIONS_OUTPUT: np.array([count])}


def detection_smoke_test(
    endpoint: str, service_dir: Path, images: Sequence[Path], tolerance: float = 1e-4, api_key: str | None = None
) -> DetectionSmokeResult:
    """Detect ``images`` one by one through ``endpoint`` and compare with the offline run of ``service_dir``."""
    if not images:
        raise PipelineStepError("the smoke test needs at least one held-out image")
    host, port = parse_endpoint(endpoint)
    rows: list[dict] = []
    largest = 0.0
    agreements: list[float] = []
    latencies: list[float] = []
    with OfflineService(service_dir) as offline, PredictionClient(host, port, access_token=api_key) as client:
        for path in images:
            data = Path(path).read_bytes()
            expected = {name: value for name, value in offline.outputs([data]).items() if name in DETECTION_OUTPUTS}
            found, milliseconds = timed(client.detect_image, data)
            latencies.append(milliseconds)
            served = _as_outputs(found, expected[SCORES_OUTPUT].shape[1])
            parity = detection_parity(expected, served)
            assert parity.top1_agreement is not None, "detection parity always measures the agreement"
            largest, agreements = max(largest, parity.max_abs_diff), agreements + [parity.top1_agreement]
            rows.append(
                {
                    "image": Path(path).name,
                    "served": int(served[NUM_DETECTIONS_OUTPUT][0]),
                    "offline": int(expected[NUM_DETECTIONS_OUTPUT][0]),
                    "agreement": parity.top1_agreement,
                    "max_abs_diff": parity.max_abs_diff,
                }
            )
    result = DetectionSmokeResult(
        endpoint=endpoint,
        images=len(images),
        max_abs_diff=largest,
        agreement=float(np.mean(agreements)),
        rows=rows,
        latencies_ms=latencies,
    )
    if result.max_abs_diff > tolerance or result.agreement < 1.0:
        raise PipelineStepError(
            f"the detector at {endpoint} does not answer as {service_dir} does offline: max abs difference "
            f"{result.max_abs_diff:.3g} (tolerance {tolerance:g}), detection agreement {result.agreement:.2%}"
        )
    return result
