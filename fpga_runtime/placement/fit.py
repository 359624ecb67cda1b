"""Whether a model fits a device: its weights, at the numeric format's bits per weight, within the on-chip memory.

The device refuses a model that does not fit (:func:`require_fits`), the cluster counts the devices each segment
of a service takes and refuses one that would have to be cut between layers (:class:`SegmentDevices`), and
``fpgaflow estimate`` reports the fit of every FPGA stage (:func:`fpga_stage_reports`).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import onnx

from fpgaflow.fpga_runtime.errors import ResourceExhausted
from fpgaflow.fpga_runtime.graph_format import check_declared
from fpgaflow.fpga_runtime.placement.cost import CostReport, cost_report
from fpgaflow.fpga_runtime.placement.split import plan_split
from fpgaflow.fpga_runtime.profiles import DeviceProfile, load_profile
from fpgaflow.fpga_runtime.service import ServiceDefinition, Stage


def require_fits(
    model: Path | onnx.ModelProto, numeric_format: str, profile: DeviceProfile, block_size: int | None = None, label: str = ""
) -> CostReport:
    """The model's cost report on the device, or ResourceExhausted saying by how much it does not fit."""
    report = cost_report(model, numeric_format, profile, block_size)
    if not report.fits:
        name = label or (model.name if isinstance(model, Path) else "graph")
        raise ResourceExhausted(
            f"model {name} does not fit device {profile.name}: its weights take "
            f"{report.graph.weight_bytes:,} bytes ({report.graph.weight_params:,} weights at "
            f"{report.graph.weight_bits:.3g} bits in {numeric_format}) but the device has "
            f"{profile.onchip_memory_bytes:,} bytes of on-chip memory"
        )
    return report


def fpga_stage_reports(service: ServiceDefinition, service_dir: Path, profile: DeviceProfile) -> list[tuple[Stage, CostReport]]:
    """Each FPGA stage of the service with its cost report on the device."""
    return [
        (stage, cost_report(Path(service_dir) / stage.file, stage.numeric_format, profile, stage.block_size))
        for stage in service.stages
        if stage.target == "FPGA"
    ]


@dataclass(frozen=True)
class StageNeed:
    """What an FPGA stage takes of a device profile: its weight bytes, and the parts and devices of its split (one
    part on one device when it fits; one part over several devices when it is one layer cut by output columns)."""

    weight_bytes: int
    parts: int
    devices: int


def _stage_need(path: str, numeric_format: str, block_size: int | None, profile_name: str) -> StageNeed:
    model = onnx.load(path)
    block_size = check_declared(model, Path(path).name, numeric_format, block_size)
    profile = load_profile(profile_name)
    weight_bytes = cost_report(model, numeric_format, profile, block_size).graph.weight_bytes
    if weight_bytes <= profile.onchip_memory_bytes:
        return StageNeed(weight_bytes, parts=1, devices=1)
    try:
        plan = plan_split(model, numeric_format, profile.onchip_memory_bytes)
    except ResourceExhausted:
        return StageNeed(weight_bytes, parts=0, devices=0)
    return StageNeed(weight_bytes, parts=plan.parts, devices=plan.devices)


def stage_need_apart(path: Path, numeric_format: str, profile: str, block_size: int | None = None) -> StageNeed:
    """The stage's :class:`StageNeed`, its graph's label checked against the declared format, analysed in a
    short-lived process: loading and shape-inferring a large graph (ResNet-50 fp32: 94 MB of weights) would
    otherwise stay in the caller's resident memory for good."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as analysis:
        return analysis.submit(_stage_need, str(path), numeric_format, block_size, profile).result()


class SegmentDevices:
    """The devices each segment of a service takes on the cluster (each FPGA graph analysed once).

    A segment's FPGA stage either fits one device or is one layer larger than a device, cut by output columns
    over several that its node holds side by side; a stage that would have to be cut between layers is
    refused: the deploy step splits such a model into segments first.
    """

    def __init__(self) -> None:
        self._needs: dict[tuple[str, float, str], StageNeed] = {}

    def per_segment(self, service: ServiceDefinition, service_dir: str | Path, device_profile: str) -> tuple[int, ...]:
        profile = load_profile(device_profile)
        counts = []
        for stage in service.stages:
            if stage.target != "FPGA":
                continue
            path = Path(service_dir) / stage.file
            key = (str(path), path.stat().st_mtime, profile.name)
            if key not in self._needs:
                self._needs[key] = stage_need_apart(path, stage.numeric_format, device_profile, stage.block_size)
            need = self._needs[key]
            if need.parts != 1:
                raise ResourceExhausted(
                    f"FPGA stage {stage.name!r} of {service.name} version {service.version} does not fit one {profile.name} "
                    f"device: its weights take {need.weight_bytes:,} bytes in {stage.numeric_format}, a device holds "
                    f"{profile.onchip_memory_bytes:,}; `fpgaflow deploy` splits such a model across several devices"
                )
            counts.append(need.devices)
        return tuple(counts) or (1,)
