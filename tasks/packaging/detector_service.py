"""The package step for a detector: :func:`fpgaflow.tasks.packaging.service_dir.package_service` with ``task: detection``.

The service directory holds the FPGA stage (head tensors) and the CPU stage (decoding + NMS) as
ONNX; ``service.json`` says ``task: detection``, carries the class names and SSD's preprocessing
(``resize: stretch`` to the input size), and names ``boxes`` as the default output (a request that
names no outputs gets all four detection outputs, see :mod:`fpgaflow.fpga_runtime.protocol`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.fpga_runtime.protocol import BOXES_OUTPUT
from fpgaflow.fpga_runtime.settings import Settings
from fpgaflow.tasks.artifacts import publish_markdown
from fpgaflow.tasks.packaging.service_dir import package_service

TASK_KIND = "detection"


def package_detector(*, name: str, version: str, class_names: Sequence[str], preprocessing: PreprocessSpec, numeric_format: str,
                     fpga_onnx: Path, cpu_onnx: Path, source: Mapping[str, str], destination: Path | None = None,
                     settings: Settings | None = None) -> Path:
    """Build, validate and atomically place a detector's service directory; returns its path."""
    return package_service(name=name, version=version, class_names=class_names, preprocessing=preprocessing,
                           numeric_format=numeric_format, fpga_onnx=fpga_onnx, cpu_onnx=cpu_onnx, source=source,
                           destination=destination, task_kind=TASK_KIND, default_output=BOXES_OUTPUT, settings=settings)


@task(name="package-detector", cache_policy=NO_CACHE)
def package_detector_task(name: str, version: str, class_names: Sequence[str], preprocessing: PreprocessSpec, numeric_format: str,
                          fpga_onnx: Path, cpu_onnx: Path, source: Mapping[str, str], destination: Path | None = None) -> Path:
    service_dir = package_detector(name=name, version=version, class_names=class_names, preprocessing=preprocessing,
                                   numeric_format=numeric_format, fpga_onnx=fpga_onnx, cpu_onnx=cpu_onnx, source=source,
                                   destination=destination)
    publish_markdown(
        "service-definition",
        f"# Detection service {name} version {version}\n\nNumeric format `{numeric_format}`, directory `{service_dir}`\n\n"
        f"```json\n{(service_dir / 'service.json').read_text()}```\n",
        f"service.json of {name} version {version}",
    )
    return service_dir
