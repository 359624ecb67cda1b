"""The split step: a service whose FPGA stage does not fit one device, written again as consecutive parts.

Where to cut and into how many parts is planned by :mod:`fpgaflow.fpga_runtime.placement.split`. Each part
is checked against the device the way the device itself checks it
(:func:`fpgaflow.fpga_runtime.placement.cost.cost_report`), and the chained parts are run against the whole
graph before the split service is written: it must answer as the unsplit model does. The split
service directory is an ordinary one whose ``service.json`` lists the parts as consecutive FPGA
stages (:mod:`fpgaflow.fpga_runtime.chain` runs them, one node per part). A part that is one layer larger
than a device is written whole: the node that runs it cuts it by output columns over the devices the
cluster holds for it, as ``fpgaflow serve`` does. A stage that is such a layer alone needs no split at all.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx

from fpgaflow.fpga_runtime.errors import InvalidServiceDefinition, ResourceExhausted
from fpgaflow.fpga_runtime.placement.cost import cost_report
from fpgaflow.fpga_runtime.placement.fit import fpga_stage_reports
from fpgaflow.fpga_runtime.placement.split import SplitPlan, chained_parity, extract_parts, plan_split, single_fpga_stage
from fpgaflow.fpga_runtime.profiles import DeviceProfile, load_profile
from fpgaflow.fpga_runtime.service import ServiceDefinition, Stage, load_service
from fpgaflow.tasks.files import replace_directory_atomic
from fpgaflow.tasks.packaging.service_dir import stage_from_onnx
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

log = logging.getLogger(__name__)
SOURCE_SPLIT_FROM = "split_from"
SOURCE_SPLIT_DEVICE = "split_device"
SOURCE_SPLIT_OF = "split_of_sha256"


@dataclass(frozen=True)
class SplitResult:
    service_dir: Path
    source_dir: Path
    device_profile: str
    onchip_memory_bytes: int
    parts: int
    devices: int
    cuts: tuple[str, ...] = ()
    part_weight_bytes: tuple[int, ...] = ()
    max_abs_diff: float = 0.0

    @property
    def split(self) -> bool:
        return self.parts > 1


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def split_service(
    service_dir: str | Path,
    output_dir: str | Path,
    device_profile: str | Path | DeviceProfile,
    settings: PipelineSettings | None = None,
) -> SplitResult:
    """Write ``output_dir``: ``service_dir`` with its FPGA stage cut into parts that each fit one device."""
    settings = settings or get_pipeline_settings()
    service_dir, output_dir = Path(service_dir), Path(output_dir)
    service = load_service(service_dir)
    profile = device_profile if isinstance(device_profile, DeviceProfile) else load_profile(device_profile)
    stage = single_fpga_stage(service)
    model_path = service_dir / stage.file
    model = onnx.load(str(model_path))
    plan = plan_split(model, stage.numeric_format, profile.onchip_memory_bytes)
    if plan.parts == 1:
        runs_on = (
            f"fits one {profile.name} device"
            if plan.devices == 1
            else f"is one layer cut by output columns over {plan.devices} {profile.name} devices, which one node holds"
        )
        raise InvalidServiceDefinition(f"{stage.file} {runs_on} in {stage.numeric_format}: nothing to split")
    stem = Path(stage.file).stem
    measured: dict[str, float] = {}

    def build(directory: Path) -> None:
        for path in sorted(service_dir.rglob("*")):
            relative = path.relative_to(service_dir)
            if path.is_file() and str(relative) != stage.file and relative.name != "service.json":
                (directory / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, directory / relative)
        part_files = extract_parts(model, plan, directory, stem, cut_slices=False)
        stages = []
        for index, (part, (path,)) in enumerate(zip(plan.parts_in_order, part_files), start=1):
            report = cost_report(path, stage.numeric_format, profile)
            if part.sliced is None and not report.fits:
                raise ResourceExhausted(
                    f"part {index} of {stage.file} takes {report.graph.weight_bytes:,} bytes on the device, more than its "
                    f"{profile.onchip_memory_bytes:,}: its weights are shared with another part"
                )
            stages.append(stage_from_onnx(f"{stage.name}.part{index}", "FPGA", path, stage.numeric_format, path.name))
        measured["diff"], scale = chained_parity(model_path, plan, part_files, stage)
        if measured["diff"] > settings.parity_tolerance * scale:
            raise InvalidServiceDefinition(
                f"the chained parts of {stage.file} differ from the whole graph by {measured['diff']:.3g} "
                f"(tolerance {settings.parity_tolerance * scale:.3g})"
            )
        index = service.stages.index(stage)
        split = service.model_copy(
            update={
                "stages": (*service.stages[:index], *stages, *service.stages[index + 1 :]),
                "source": {
                    **service.source,
                    SOURCE_SPLIT_FROM: str(service_dir.resolve()),
                    SOURCE_SPLIT_DEVICE: profile.name,
                    SOURCE_SPLIT_OF: _sha256(model_path),
                },
            }
        )
        ServiceDefinition.model_validate(split.model_dump()).save(directory)
        load_service(directory)

    replace_directory_atomic(build, output_dir)
    log.info("split %s into %d parts for %s at tensors %s", stage.file, plan.parts, profile.name, list(plan.cuts))
    return SplitResult(
        service_dir=output_dir,
        source_dir=service_dir,
        device_profile=profile.name,
        onchip_memory_bytes=profile.onchip_memory_bytes,
        parts=plan.parts,
        devices=plan.devices,
        cuts=plan.cuts,
        part_weight_bytes=plan.part_weight_bytes,
        max_abs_diff=measured["diff"],
    )


def fit_to_device(service_dir: str | Path, device_profile: str | Path, settings: PipelineSettings | None = None) -> SplitResult:
    """The service directory to deploy on ``device_profile`` devices: itself when its FPGA stage runs as one part
    (fits one device, or is one layer the node cuts over several), else its split under
    ``<home>/split/<name>-<version>-<profile>`` (made once per FPGA graph)."""
    settings = settings or get_pipeline_settings()
    service_dir = Path(service_dir).resolve()
    service = load_service(service_dir)
    profile = load_profile(device_profile)
    stage_reports = fpga_stage_reports(service, service_dir, profile)
    reports = [report for _, report in stage_reports]

    def plan_of(stage: Stage) -> SplitPlan:
        return plan_split(onnx.load(str(service_dir / stage.file)), stage.numeric_format, profile.onchip_memory_bytes)

    def itself(devices: int) -> SplitResult:
        return SplitResult(
            service_dir=service_dir,
            source_dir=Path(service.source.get(SOURCE_SPLIT_FROM, service_dir)),
            device_profile=profile.name,
            onchip_memory_bytes=profile.onchip_memory_bytes,
            parts=max(1, len(reports)),
            devices=devices,
            part_weight_bytes=tuple(report.graph.weight_bytes for report in reports),
        )

    if all(report.fits for report in reports):
        return itself(max(1, len(reports)))
    if len(reports) > 1:  # split already: a part that does not fit one device is a layer its node cuts over several
        return itself(sum(1 if report.fits else plan_of(stage).devices for stage, report in stage_reports))
    stage = single_fpga_stage(service)
    plan = plan_of(stage)
    if plan.parts == 1:
        return itself(plan.devices)
    target = settings.home / "split" / f"{service.name}-{service.version}-{profile.name}"
    if target.is_dir():
        existing = load_service(target)
        if existing.source.get(SOURCE_SPLIT_OF) == _sha256(service_dir / stage.file):
            parts = [stage for stage in existing.stages if stage.target == "FPGA"]
            weights = tuple(cost_report(target / stage.file, stage.numeric_format, profile).graph.weight_bytes for stage in parts)
            return SplitResult(
                service_dir=target,
                source_dir=service_dir,
                device_profile=profile.name,
                onchip_memory_bytes=profile.onchip_memory_bytes,
                parts=len(parts),
                devices=plan.devices,
                part_weight_bytes=weights,
            )
    return split_service(service_dir, target, profile, settings)
