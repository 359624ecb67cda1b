"""What the numerics step hands on: each format's gate result, latencies and stage files, and the format to serve."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fpgaflow.fpga_runtime.numerics import FORMATS
from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.featurizers.features import load_images
from fpgaflow.tasks.numerics.gate import FormatGateResult, choose_serve_format
from fpgaflow.tasks.numerics.latency import FormatLatency, format_latencies
from fpgaflow.tasks.settings import PipelineSettings

UNMEASURED = {"modelled_ms": None, "measured_ms": None}


@dataclass
class FormatFiles:
    fpga_onnx: Path
    cpu_onnx: Path


@dataclass
class NumericsOutcome:
    results: dict[str, FormatGateResult]
    serve_format: str
    files: dict[str, FormatFiles] = field(default_factory=dict)
    latencies: dict[str, FormatLatency] = field(default_factory=dict)
    serve_format_reason: str = ""
    device_profile: str = ""

    @property
    def served(self) -> FormatFiles:
        return self.files[self.serve_format]

    def summary(self) -> dict:
        """The keys of ``fpgaflow run --json`` this step gives: ``numerics.<format>``, ``serve_format`` and why."""
        numerics = {}
        for name, result in self.results.items():
            latency = self.latencies.get(name)
            numerics[name] = {
                **result.summary(),
                **(latency.summary() if latency else {"modelled_ms": None, "measured_ms": None}),
            }
        return {
            "numerics": numerics,
            "serve_format": self.serve_format,
            "serve_format_reason": self.serve_format_reason,
            "device_profile": self.device_profile,
        }


def drop_limits(settings: PipelineSettings, configured: float | Mapping[str, float] | None = None) -> dict[str, float]:
    """The largest drop from fp32 each format may show and pass: ``configured`` (the config's: one number for every
    format, or per format), else the ``max_accuracy_drop_by_format`` setting, else the ``max_accuracy_drop`` setting."""
    if configured is not None and not isinstance(configured, Mapping):
        return dict.fromkeys(FORMATS, float(configured))
    per_format = {**settings.max_accuracy_drop_by_format, **(configured or {})}
    return {name: per_format.get(name, settings.max_accuracy_drop) for name in FORMATS}


def serve_device(config: PipelineConfig, settings: PipelineSettings) -> str:
    """The device profile the serve format is chosen for: the config's, else the one nodes emulate."""
    return config.device_profile or settings.device_profile


def decide_serve_format(
    results: dict[str, FormatGateResult],
    files: dict[str, FormatFiles],
    image: np.ndarray,
    config: PipelineConfig,
    settings: PipelineSettings,
) -> NumericsOutcome:
    """Every format's batch-1 latency (modelled on the device, measured here) and the format to serve, with why."""
    device = serve_device(config, settings)
    latencies = format_latencies(
        {name: paths.fpga_onnx for name, paths in files.items()}, image, device, settings.numerics_latency_repeats
    )
    choice = choose_serve_format(results, latencies, config.serve_format, device)
    return NumericsOutcome(results, choice.format, files, latencies, choice.reason, device)


def calibration_images(splits: pd.DataFrame, spec: PreprocessSpec, count: int) -> np.ndarray:
    """Up to ``count`` training images spread over the train split, preprocessed."""
    paths = list(splits.loc[splits["split"] == "train", "path"])
    chosen = sorted({int(index) for index in np.linspace(0, len(paths) - 1, num=min(count, len(paths)))})
    return load_images([paths[index] for index in chosen], spec)
