"""Whether a model fits a device: its weights, at the numeric format's bits per weight, within the on-chip memory.

The device refuses a model that does not fit (:func:`require_fits`), the cluster refuses to place a
service one of whose FPGA stages does not fit one of its devices (:class:`StageFitChecks`), and
``fpgaflow estimate`` reports the fit of every FPGA stage (:func:`fpga_stage_reports`).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from fpgaflow.fpga_runtime.errors import ResourceExhausted
from fpgaflow.fpga_runtime.placement.cost import CostReport, cost_report
from fpgaflow.fpga_runtime.profiles import DeviceProfile, load_profile
from fpgaflow.fpga_runtime.service import ServiceDefinition, Stage


def require_fits(onnx_path: Path, numeric_format: str, profile: DeviceProfile) -> CostReport:
    """The model's cost report on the device, or ResourceExhausted saying by how much it does not fit."""
    report = cost_report(onnx_path, numeric_format, profile)
    if not report.fits:
        raise ResourceExhausted(
            f"model {onnx_path.name} does not fit device {profile.name}: its weights take "
            f"{report.graph.weight_bytes:,} bytes ({report.graph.weight_params:,} weights at "
            f"{report.graph.weight_bits:g} bits in {numeric_format}) but the device has "
            f"{profile.onchip_memory_bytes:,} bytes of on-chip memory"
        )
    return report


def fpga_stage_reports(service: ServiceDefinition, service_dir: Path, profile: DeviceProfile) -> list[tuple[Stage, CostReport]]:
    """Each FPGA stage of the service with its cost report on the device."""
    return [
        (stage, cost_report(Path(service_dir) / stage.file, stage.numeric_format, profile))
        for stage in service.stages
        if stage.target == "FPGA"
    ]


def _weight_bytes(path: str, numeric_format: str, profile: str) -> int:
    return cost_report(path, numeric_format, load_profile(profile)).graph.weight_bytes


def weight_bytes_apart(path: Path, numeric_format: str, profile: str) -> int:
    """The stage's weight bytes on the device, analysed in a short-lived process: loading and shape-inferring a
    large graph (ResNet-50 fp32: 94 MB of weights) would otherwise stay in the caller's resident memory for good."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as analysis:
        return analysis.submit(_weight_bytes, str(path), numeric_format, profile).result()


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
            weight_bytes = weight_bytes_apart(path, stage.numeric_format, device_profile)
            if weight_bytes > profile.onchip_memory_bytes:
                raise ResourceExhausted(
                    f"FPGA stage {stage.name!r} of {service.name} version {service.version} does not fit one {profile.name} "
                    f"device: its weights take {weight_bytes:,} bytes in {stage.numeric_format}, a device holds "
                    f"{profile.onchip_memory_bytes:,}; `fpgaflow deploy` splits such a model across several devices"
                )
            self._checked.add(key)
