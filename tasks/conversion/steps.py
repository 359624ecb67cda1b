"""The conversion stage's Prefect task: a model of any kind converted to ONNX, with its parity measured."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from fpgaflow.tasks.artifacts import publish_table
from fpgaflow.tasks.conversion.onnx_stages import ConversionReport, ensure_parity

if TYPE_CHECKING:
    from fpgaflow.tasks.kinds import ModelKind


@task(name="convert-to-onnx", cache_policy=NO_CACHE)
def convert_task(
    kind: ModelKind, fpga_model_path: Path, cpu_model_path: Path, held_out_images: np.ndarray, output_dir: Path
) -> ConversionReport:
    """Convert both stages and publish the parity table; a parity miss fails the task with a
    :class:`~fpgaflow.tasks.conversion.onnx_stages.ParityError` that carries the report, so it can still be recorded."""
    report = kind.convert(fpga_model_path, cpu_model_path, held_out_images, output_dir)
    publish_table(
        "onnx-parity",
        [{"stage": stage, **parity.model_dump()} for stage, parity in report.stages.items()],
        f"{kind.parity_compared} on {report.images} held-out images (opset {report.opset}, tolerance {report.tolerance:g})",
    )
    return ensure_parity(report)
