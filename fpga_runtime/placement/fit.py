"""Whether a model fits a device: its weights, at the numeric format's bits per weight, within the on-chip memory.

The device refuses a model that does not fit (:func:`require_fits`), the cluster refuses to place a
service one of whose FPGA stages does not fit one of its devices (:class:`StageFitChecks`), and
``fpgaflow estimate`` reports the fit of every FPGA stage (:func:`fpga_stage_reports`).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import onnx

from fpgaflow.fpga_runtime.errors import ResourceExhausted
from fpgaflow.fpga_runtime.graph_format import check_declared
from fpgaflow.fpga_runtime.placement.cost import CostReport, cost_report
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


def _weight_bytes(path: str, numeric_format: str, block_size: int | None, profile: str) -> int:
    model = onnx.load(path)
    block_size = check_declared(model, Path(path).name, numeric_format, block_size)
    return cost_report(model, numeric_format, load_profile(profile), block_size).graph.weight_bytes


def weight_bytes_apart(path: Path, numeric_format: str, profile: str, block_size: int | None = None) -> int:
    """The stage's weight bytes on the device, its graph's label checked against the declared format, analysed in a
    short-lived process: loading and shape-inferring a large graph (ResNet-50 fp32: 94 MB of weights) would
    otherwise stay in the caller's resident memory for good."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as analysis:
        return analysis.submit(_weight_bytes, str(path), numeric_format, block_size, profile).result()


class StageFitChecks:
    """Every FPGA stage of a service must fit one device in its numeric format (each file checked once)."""

    def __init__(self) -> None:
        self._checked: set[tuple[str, float, str]] = set()

    def check(self, service: ServiceDefinition, service_dir: str | Path, device_profile: str) -> None:
        profile = load_profile(device_profile)
        for stage in service.stages:
            if stage.target != "FPGA":
                continue
            path = Path(service_dir) / stage.file
            key = (str(path), path.stat().st_mtime, profile.name)
            if key in self._checked:
                continue
            weight_bytes = weight_bytes_apart(path, stage.numeric_format, device_profile, stage.block_size)
            if weight_bytes > profile.onchip_memory_bytes:
                raise ResourceExhausted(
                    f"FPGA stage {stage.name!r} of {service.name} version {service.version} does not fit one {profile.name} "
                    f"device: its weights take {weight_bytes:,} bytes in {stage.numeric_format}, a device holds "
                    f"{profile.onchip_memory_bytes:,}; `fpgaflow deploy` splits such a model across several devices"
                )
            self._checked.add(key)
