"""The packaging stage's Prefect tasks: the service directory of a model of any kind, and its serving image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.fpga_runtime.service import TensorNames
from fpgaflow.tasks.artifacts import publish_markdown
from fpgaflow.tasks.packaging.image_build import ImageResult, build_image, image_markdown
from fpgaflow.tasks.packaging.service_dir import package_service

if TYPE_CHECKING:
    from fpgaflow.tasks.kinds import ModelKind


@task(name="package-service", cache_policy=NO_CACHE)
def package_task(
    kind: ModelKind,
    name: str,
    version: str,
    class_names: Sequence[str],
    preprocessing: PreprocessSpec,
    numeric_format: str,
    fpga_onnx: Path,
    cpu_onnx: Path,
    source: Mapping[str, str],
    tensor_names: TensorNames,
    destination: Path | None = None,
) -> Path:
    service_dir = package_service(
        name=name,
        version=version,
        class_names=class_names,
        preprocessing=preprocessing,
        numeric_format=numeric_format,
        fpga_onnx=fpga_onnx,
        cpu_onnx=cpu_onnx,
        source=source,
        destination=destination,
        task_kind=kind.service_task,
        default_output=kind.default_output,
        tensor_names=tensor_names,
    )
    publish_markdown(
        "service-definition",
        f"# {kind.service_title} {name} version {version}\n\nNumeric format `{numeric_format}`, "
        f"directory `{service_dir}`\n\n```json\n{(service_dir / 'service.json').read_text()}```\n",
        f"service.json of {name} version {version}",
    )
    return service_dir


@task(name="build-image")
def build_image_task(service_dir: str | Path, base_image: str | None = None, tag: str | None = None) -> ImageResult:
    """Prefect step: :func:`build_image`, a line per Dockerfile step in the run log (the whole log in build.log)."""
    result = build_image(service_dir, base_image=base_image, tag=tag)
    publish_markdown("image-build", image_markdown(result), description="Serving image of the service")
    return result
