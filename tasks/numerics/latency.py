"""Each prepared format's latency at batch 1: modelled on the deployment's device, measured in emulation here.

The modelled time is the device cost model's (:func:`fpgaflow.fpga_runtime.placement.cost.cost_report`) for
the FPGA stage in that format on the device profile; the measured time is onnxruntime running the same
graph on this CPU, one image at a time, the formats interleaved so machine noise hits them alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fpgaflow.fpga_runtime.errors import InvalidInput
from fpgaflow.fpga_runtime.ort import make_session
from fpgaflow.fpga_runtime.placement.cost import cost_report
from fpgaflow.fpga_runtime.profiles import load_profile
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.numerics.formats import batch1_latency_p50

# The device profile of a deployment without an FPGA: the format is chosen by what this CPU runs fastest.
CPU_PROFILE = "cpu"


@dataclass(frozen=True)
class FormatLatency:
    """Milliseconds per image at batch 1; ``modelled_ms`` None where the profile cannot run the format (or is ``cpu``)."""

    modelled_ms: float | None
    measured_ms: float

    def summary(self) -> dict[str, float | None]:
        return {
            "modelled_ms": None if self.modelled_ms is None else round(self.modelled_ms, 6),
            "measured_ms": round(self.measured_ms, 3),
        }


def modelled_ms(fpga_onnx: Path, numeric_format: str, device_profile: str) -> float | None:
    """The device model's milliseconds per image for the graph on ``device_profile``; None on ``cpu`` or where the
    profile does not support the format."""
    if device_profile == CPU_PROFILE:
        return None
    try:
        profile = load_profile(device_profile)
        if numeric_format not in profile.supported_formats:
            return None
        return cost_report(fpga_onnx, numeric_format, profile).latency.seconds * 1e3
    except InvalidInput as error:
        raise PipelineStepError(f"cannot model the latency of {numeric_format} on {device_profile}: {error}") from None


def _runner(path: Path):
    session = make_session(Path(path))
    input_name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {input_name: batch})


def format_latencies(
    fpga_onnx: Mapping[str, Path], image: np.ndarray, device_profile: str, repeats: int
) -> dict[str, FormatLatency]:
    """Modelled and measured batch-1 latency of each format's FPGA stage; ``image``: one preprocessed image."""
    measured = batch1_latency_p50({name: _runner(path) for name, path in fpga_onnx.items()}, image, repeats)
    return {name: FormatLatency(modelled_ms(path, name, device_profile), measured[name]) for name, path in fpga_onnx.items()}
